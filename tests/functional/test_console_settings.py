"""SECRET_KEY signs console sessions: kept under var/ embedded, given in production."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from core.config import Settings
from core.embedded_secret import session_key
from core.errors import ConfigError

PRODUCTION = {
    "DATABASE_URL": "postgresql+psycopg://db/meetinghooks",
    "BROKER_URL": "redis://cache:6379/0",
}


def test_embedded_mode_generates_a_private_key_once_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = Settings.from_env({}).secret_key
    assert first is not None
    assert len(first.get_secret_value()) >= 32
    kept = tmp_path / "var" / "secret_key"
    assert kept.read_text().strip() == first.get_secret_value()
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert Settings.from_env({}).secret_key == first  # a restart keeps every session
    assert first.get_secret_value() not in repr(Settings.from_env({}))


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret_key"
    keys: list[str] = []
    threads = [
        threading.Thread(target=lambda: keys.append(session_key(path.parent))) for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]


def test_an_embedded_secret_key_from_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = Settings.from_env({"SECRET_KEY": "k" * 40})
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == "k" * 40
    assert not (tmp_path / "var" / "secret_key").exists()


def test_production_has_no_key_unless_given() -> None:
    assert Settings.from_env(PRODUCTION).secret_key is None
    given = Settings.from_env({**PRODUCTION, "SECRET_KEY": "p" * 32}).secret_key
    assert given is not None
    assert given.get_secret_value() == "p" * 32


def test_a_short_key_stops_the_process_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"SECRET_KEY: .*at least 32 characters") as raised:
        Settings.from_env({**PRODUCTION, "SECRET_KEY": "short-key"})
    assert "short-key" not in str(raised.value)
