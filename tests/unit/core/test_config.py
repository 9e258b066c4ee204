from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from core.config import DEFAULT_RETRY_SCHEDULE, Settings
from core.errors import ConfigError

PRODUCTION = {
    "DATABASE_URL": "postgresql+psycopg://db/meetinghooks",
    "BROKER_URL": "redis://cache:6379/0",
}


class TestFromEnv:
    def test_embedded_defaults_when_no_urls(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        settings = Settings.from_env({})
        assert settings.embedded is True
        assert settings.database_url.startswith("sqlite:///")
        assert settings.broker_url.startswith("sqla+sqlite:///")
        assert settings.base_url == "http://127.0.0.1:8000"
        assert ipaddress.ip_network("127.0.0.0/8") in settings.callback_allowed_networks

    def test_embedded_mode_makes_one_ingest_secret_and_keeps_it_private(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        first = Settings.from_env({}).ingest_signing_secret
        assert first is not None
        assert first.startswith("whsec_")
        assert Settings.from_env({}).ingest_signing_secret == first
        secret_file = tmp_path / "var" / "ingest-signing-secret"
        assert secret_file.read_text().strip() == first
        assert secret_file.stat().st_mode & 0o777 == 0o600
        # Written aside and linked into place: no draft is left beside the embedded secrets.
        assert sorted(p.name for p in (tmp_path / "var").iterdir()) == [
            "ingest-signing-secret",
            "secret_key",
        ]

    def test_a_configured_ingest_secret_wins_in_the_embedded_mode(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        given = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        assert Settings.from_env({"INGEST_SIGNING_SECRET": given}).ingest_signing_secret == given
        assert not (tmp_path / "var" / "ingest-signing-secret").exists()

    def test_production_has_no_allowed_networks_and_no_secret(self) -> None:
        settings = Settings.from_env(PRODUCTION)
        assert settings.embedded is False
        assert settings.callback_allowed_networks == ()
        assert settings.ingest_signing_secret is None
        assert settings.database_url == PRODUCTION["DATABASE_URL"]

    def test_fixed_names_are_read(self) -> None:
        settings = Settings.from_env(
            {
                **PRODUCTION,
                "HOST": "hooks.internal",
                "PORT": "9000",
                "INGEST_SIGNING_SECRET": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "PRESENTER_LINK_TTL_SECONDS": "60",
                "CALLBACK_ALLOWED_NETWORKS": "10.0.0.0/8, fd00::/8",
                "RETRY_SCHEDULE": "1,2,3",
                "CALLBACK_TIMEOUT_SECONDS": "2.5",
            }
        )
        assert settings.port == 9000
        assert settings.base_url == "http://hooks.internal:9000"
        assert settings.ingest_signing_secret == "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        assert settings.presenter_link_ttl_seconds == 60
        assert settings.callback_allowed_networks == (
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("fd00::/8"),
        )
        assert settings.retry_schedule == (1, 2, 3)
        assert settings.callback_timeout_seconds == 2.5

    def test_pool_sizes_default_to_two_processes_and_32_threads(self) -> None:
        settings = Settings.from_env(PRODUCTION)
        assert (settings.event_concurrency, settings.delivery_concurrency) == (2, 32)
        settings = Settings.from_env(
            {**PRODUCTION, "EVENT_CONCURRENCY": "4", "DELIVERY_CONCURRENCY": "100"}
        )
        assert (settings.event_concurrency, settings.delivery_concurrency) == (4, 100)

    def test_public_base_url_wins_and_loses_trailing_slash(self) -> None:
        settings = Settings.from_env({**PRODUCTION, "PUBLIC_BASE_URL": "https://hooks.example/"})
        assert settings.base_url == "https://hooks.example"

    def test_default_retry_schedule_is_the_specs(self) -> None:
        assert Settings.from_env(PRODUCTION).retry_schedule == DEFAULT_RETRY_SCHEDULE
        assert DEFAULT_RETRY_SCHEDULE == (5, 300, 1800, 7200, 18000, 36000, 36000)

    @pytest.mark.parametrize(
        ("name", "value"),
        [
            ("PORT", "eighty"),
            ("PORT", "70000"),
            ("CALLBACK_ALLOWED_NETWORKS", "10.0.0.0/33"),
            ("RETRY_SCHEDULE", "5,soon"),
            ("CALLBACK_TIMEOUT_SECONDS", "0"),
            ("PRESENTER_LINK_TTL_SECONDS", "-1"),
            ("EVENT_CONCURRENCY", "0"),
            ("EVENT_CONCURRENCY", "many"),
            ("DELIVERY_CONCURRENCY", "0"),
            ("DELIVERY_CONCURRENCY", "1001"),
            ("LOG_FORMAT", "yaml"),
            ("GRACEFUL_TIMEOUT_SECONDS", "0"),
            ("GRACEFUL_TIMEOUT_SECONDS", "soon"),
        ],
    )
    def test_bad_values_fail_at_startup_naming_the_variable(self, name: str, value: str) -> None:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({**PRODUCTION, name: value})
