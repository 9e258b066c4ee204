from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask

from core.config import Settings
from core.errors import ConfigError
from receiver import limits

PRODUCTION = {
    "DATABASE_URL": "postgresql+psycopg://db/meetinghooks",
    "BROKER_URL": "redis://:s3cret@cache:6379/0",
}
RABBITMQ = {**PRODUCTION, "BROKER_URL": "amqp://guest:guest@rabbit:5672//"}


class TestFromEnv:
    def test_limits_are_on_by_default(self) -> None:
        settings = Settings.from_env(PRODUCTION)

        assert settings.rate_limit_api == "600/minute"
        assert settings.rate_limit_ingest == "1000/second"
        assert settings.rate_limit_storage_url is None

    @pytest.mark.parametrize("off", ["off", "OFF", " Off "])
    def test_off_switches_each_limit_off(self, off: str) -> None:
        api_off = Settings.from_env({**PRODUCTION, "RATE_LIMIT_API": off})
        ingest_off = Settings.from_env({**PRODUCTION, "RATE_LIMIT_INGEST": off})

        assert (api_off.rate_limit_api, api_off.rate_limit_ingest) == (None, "1000/second")
        assert (ingest_off.rate_limit_api, ingest_off.rate_limit_ingest) == ("600/minute", None)

    def test_several_limits_are_one_setting(self) -> None:
        settings = Settings.from_env({**PRODUCTION, "RATE_LIMIT_API": "10/second;500/hour"})

        assert settings.rate_limit_api == "10/second;500/hour"

    @pytest.mark.parametrize("value", ["fast", "600/fortnight", "0/minute", "600"])
    @pytest.mark.parametrize("name", ["RATE_LIMIT_API", "RATE_LIMIT_INGEST"])
    def test_a_bad_limit_names_its_variable(self, name: str, value: str) -> None:
        with pytest.raises(ConfigError, match=f'{name}: .*must be "off" or limits'):
            Settings.from_env({**PRODUCTION, name: value})

    def test_a_bad_storage_url_is_named_without_its_password(self) -> None:
        with pytest.raises(ConfigError, match="RATE_LIMIT_STORAGE_URL") as raised:
            Settings.from_env({**PRODUCTION, "RATE_LIMIT_STORAGE_URL": "mongodb://u:pw0rd@h/db"})

        assert "pw0rd" not in str(raised.value)


class TestStorage:
    def test_an_explicit_url_wins(self) -> None:
        settings = Settings.from_env({**RABBITMQ, "RATE_LIMIT_STORAGE_URL": "redis://r:6379/3"})

        assert limits.storage_url(settings) == "redis://r:6379/3"

    def test_a_redis_broker_holds_the_counters(self) -> None:
        assert limits.storage_url(Settings.from_env(PRODUCTION)) == PRODUCTION["BROKER_URL"]

    def test_rabbitmq_alone_counts_per_process_and_says_so(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        settings = Settings.from_env(RABBITMQ)

        limits.install(Flask(__name__), settings)

        assert limits.storage_url(settings) == "memory://"
        assert "receiver.rate_limit.per_process" in caplog.text
        assert "guest:guest" not in caplog.text

    def test_the_embedded_mode_counts_in_memory_quietly(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.chdir(tmp_path)
        settings = Settings.from_env({})

        limits.install(Flask(__name__), settings)

        assert limits.storage_url(settings) == "memory://"
        assert "receiver.rate_limit" not in caplog.text

    def test_both_off_installs_nothing(self) -> None:
        settings = Settings.from_env(
            {**RABBITMQ, "RATE_LIMIT_API": "off", "RATE_LIMIT_INGEST": "off"}
        )
        app = Flask(__name__)

        assert limits.install(app, settings) is None
        assert limits.EXTENSION not in app.extensions
        assert not app.before_request_funcs
