from __future__ import annotations

import io
import itertools
import json
import os
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.models import AccessToken, User
from core.security import hash_token
from meetinghooks.cli import main


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("DATABASE_URL", "BROKER_URL", "TEST_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "var" / "meetinghooks.sqlite3"


def _run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def test_users_create_json_prints_token_and_secret_and_stores_only_a_hash(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run_json(
        capsys, "users", "create", "--email", "A@Example.com", "--name", "Alice", "--json"
    )
    assert isinstance(out["userId"], int)
    token = str(out["accessToken"])
    assert len(token) >= 32
    assert str(out["signingSecret"]).startswith("whsec_")
    assert out["scopes"] == ["scheduler", "start_meeting", "user_info"]
    engine = sa.create_engine(f"sqlite:///{embedded}")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(AccessToken.token_hash)).scalars().all()
        email = conn.execute(sa.select(User.email)).scalar_one()
    engine.dispose()
    assert stored == [hash_token(token)]
    assert token not in stored
    assert email == "a@example.com"


def test_duplicate_email_is_a_clear_error(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["users", "create", "--email", "a@example.com", "--name", "A"]) == 0
    assert main(["users", "create", "--email", "a@example.com", "--name", "A"]) == 1
    assert "already taken" in capsys.readouterr().err


def test_tokens_create_with_scope_and_revoke(
    embedded: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # One random token in 64 began with "-", which the revoke command line took for an option.
    dashed = (f"-rYa1NmOE4-9cDhqA2Wgft7VP8XvXp{n:02d}" for n in itertools.count())
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _n: next(dashed))
    _run_json(capsys, "users", "create", "--email", "a@example.com", "--name", "A", "--json")
    out = _run_json(
        capsys, "tokens", "create", "--email", "a@example.com", "--scope", "user_info", "--json"
    )
    assert out["scopes"] == ["user_info"]
    assert str(out["accessToken"]).startswith("mhat_")
    assert main(["tokens", "revoke", str(out["accessToken"])]) == 0
    engine = sa.create_engine(f"sqlite:///{embedded}")
    with engine.connect() as conn:
        revoked = conn.execute(
            sa.select(AccessToken.revoked_at).where(
                AccessToken.token_hash == hash_token(str(out["accessToken"]))
            )
        ).scalar_one()
    engine.dispose()
    assert revoked is not None


def test_bad_configuration_exits_2_naming_the_variable(
    embedded: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PORT", "not-a-port")
    assert main(["db", "upgrade"]) == 2
    assert "PORT" in capsys.readouterr().err


def test_worker_passes_unknown_options_to_celery(
    embedded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    launched: list[list[str]] = []
    environments: list[dict[str, str]] = []

    def execve(_path: str, argv: list[str], env: dict[str, str]) -> None:
        launched.append(list(argv))
        environments.append(env)

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr("os.execve", execve)
    main(["worker", "--concurrency", "8", "-Q", "deliveries"])
    assert launched[0][-4:] == ["--concurrency", "8", "-Q", "deliveries"]
    assert launched[0][1:5] == ["-m", "celery", "-A", "workers.main"]
    # The pool processes share a fresh, empty metrics directory; this process is left alone.
    shared = Path(environments[0]["PROMETHEUS_MULTIPROC_DIR"])
    assert shared.is_dir()
    assert list(shared.iterdir()) == []
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_other_commands_refuse_unknown_options(embedded: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["db", "upgrade", "--bogus"])
    assert exited.value.code == 2


def _revoked_at(embedded: Path, token: str) -> object:
    engine = sa.create_engine(f"sqlite:///{embedded}")
    with engine.connect() as conn:
        revoked = conn.execute(
            sa.select(AccessToken.revoked_at).where(AccessToken.token_hash == hash_token(token))
        ).scalar_one()
    engine.dispose()
    return revoked


def test_users_create_without_json_prints_token_and_secret(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["users", "create", "--email", "a@example.com", "--name", "A"]) == 0
    out = capsys.readouterr().out
    assert "access token" in out
    assert "whsec_" in out


@pytest.mark.parametrize(
    "options",
    [
        ["--scope", "user_info,scheduler"],
        ["--scopes", "user_info", "--scope", "scheduler"],
        ["--scope", "user_info", "--scope", "scheduler", "--scope", "user_info"],
    ],
)
def test_tokens_create_scopes_by_comma_or_repetition(
    embedded: Path, capsys: pytest.CaptureFixture[str], options: list[str]
) -> None:
    _run_json(capsys, "users", "create", "--email", "a@example.com", "--name", "A", "--json")
    out = _run_json(capsys, "tokens", "create", "--email", "a@example.com", *options, "--json")
    assert out["scopes"] == ["user_info", "scheduler"]


def test_tokens_create_unknown_scope_or_user_fails_clearly(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_json(capsys, "users", "create", "--email", "a@example.com", "--name", "A", "--json")
    argv = ["tokens", "create", "--email", "a@example.com", "--scope", "admin"]
    assert main(argv) == 1
    assert "unknown scope admin" in capsys.readouterr().err
    assert main(["tokens", "create", "--email", "nobody@example.com"]) == 1
    assert "no user" in capsys.readouterr().err


def test_tokens_revoke_by_option_stdin_and_json(
    embedded: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    created = _run_json(
        capsys, "users", "create", "--email", "a@example.com", "--name", "A", "--json"
    )
    first = str(
        _run_json(capsys, "tokens", "create", "--email", "a@example.com", "--json")["accessToken"]
    )
    out = _run_json(capsys, "tokens", "revoke", "--token", first, "--json")
    assert out == {"userId": created["userId"], "revoked": True}
    assert _revoked_at(embedded, first) is not None

    monkeypatch.setattr("sys.stdin", io.StringIO(f"{created['accessToken']}\n"))
    assert main(["tokens", "revoke", "-"]) == 0
    assert "revoked" in capsys.readouterr().out
    assert _revoked_at(embedded, str(created["accessToken"])) is not None

    assert main(["tokens", "revoke", "never-issued"]) == 1
    assert "no such token" in capsys.readouterr().err
    assert main(["tokens", "revoke"]) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["users", "create", "--email", "a@example.com", "--name", "A\x00B"],
        ["users", "create", "--email", "a@example.com", "--name", "  "],
        ["users", "create", "--email", "a@example.com", "--name", "x" * 201],
        ["users", "create", "--email", "a" * 250 + "@example.com", "--name", "A"],
        ["users", "create", "--email", "a@example.com", "--name", "A", "--personal-url", "v1"],
    ],
    ids=["nul-name", "blank-name", "long-name", "long-email", "reserved-url"],
)
def test_users_create_refuses_bad_fields_with_exit_1(
    embedded: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert main(argv) == 1
    assert capsys.readouterr().err.startswith("meetinghooks: ")


def test_tokens_create_refuses_an_oversized_label(
    embedded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_json(capsys, "users", "create", "--email", "a@example.com", "--name", "A", "--json")
    assert main(["tokens", "create", "--email", "a@example.com", "--label", "x" * 101]) == 1
    assert "label" in capsys.readouterr().err
