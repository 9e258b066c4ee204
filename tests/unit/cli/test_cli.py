from __future__ import annotations

import io
import itertools
import json
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core import logs
from core.config import Settings
from core.models import AccessToken, User
from core.security import hash_token
from meetinghooks import cli
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


@pytest.fixture
def supervised(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[list[str]], dict[str, str]]]:
    """Record what `worker` would start instead of starting it."""
    calls: list[tuple[list[list[str]], dict[str, str]]] = []

    def supervise(argvs: list[list[str]], env: dict[str, str], *, grace: float) -> int:
        calls.append(([list(argv) for argv in argvs], env))
        return 0

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setattr(cli, "_supervise", supervise)
    return calls


def _option(argv: list[str], name: str) -> str:
    """Return the last value given to `name`, as celery would take it."""
    return [argv[i + 1] for i, token in enumerate(argv) if token == name][-1]


def test_worker_runs_an_events_pool_and_a_deliveries_pool_sized_by_settings(
    embedded: Path, monkeypatch: pytest.MonkeyPatch, supervised: list[Any]
) -> None:
    monkeypatch.setenv("DELIVERY_CONCURRENCY", "50")
    assert main(["worker"]) == 0
    [(argvs, env)] = supervised
    events, deliveries = argvs
    assert events[1:6] == ["-m", "celery", "-A", "workers.main", "worker"]
    assert [_option(events, o) for o in ("-Q", "-P", "--concurrency", "-n")] == [
        "events", "prefork", "2", "events@%h"
    ]  # fmt: skip
    assert [_option(deliveries, o) for o in ("-Q", "-P", "--concurrency", "-n")] == [
        "deliveries", "threads", "50", "deliveries@%h"
    ]  # fmt: skip
    # Both pools' processes share a fresh, empty metrics directory; this process is left alone.
    shared = Path(env["PROMETHEUS_MULTIPROC_DIR"])
    assert shared.is_dir()
    assert list(shared.iterdir()) == []
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_worker_shares_options_and_gives_one_pools_options_to_the_events_pool(
    embedded: Path, supervised: list[Any]
) -> None:
    main(["worker", "-l", "DEBUG", "--concurrency=4", "-B", "-s", "beat.db", "-n", "a@b"])
    [([events, deliveries], _)] = supervised
    assert events[-9:] == ["-l", "DEBUG", "--concurrency", "4", "-B", "-s", "beat.db", "-n",
                           "events-a@b"]  # fmt: skip
    assert deliveries[-4:] == ["-l", "DEBUG", "-n", "deliveries-a@b"]
    assert "-B" not in deliveries  # beat runs once
    assert _option(deliveries, "--concurrency") == "32"


@pytest.mark.parametrize("pool", ["events", "deliveries"])
def test_worker_runs_one_pool_alone_with_every_option_passed_on(
    embedded: Path, supervised: list[Any], pool: str
) -> None:
    main(["worker", pool, "--concurrency", "8", "-n", "x@%h"])
    [([argv], _)] = supervised
    assert _option(argv, "-Q") == pool
    assert argv[-4:] == ["--concurrency", "8", "-n", "x@%h"]  # last, so they win


@pytest.mark.parametrize("option", ["-Q", "-Qdeliveries", "--queues=deliveries", "-P", "--pool"])
def test_worker_refuses_one_pools_options_for_both(
    embedded: Path, supervised: list[Any], capsys: pytest.CaptureFixture[str], option: str
) -> None:
    assert main(["worker", option, "deliveries"]) == 1
    assert "meetinghooks worker events|deliveries" in capsys.readouterr().err
    assert supervised == []


def test_supervise_stops_every_child_when_one_ends_and_kills_stragglers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli.signal, "signal", lambda *_args: None)  # leave pytest's handlers
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    started = time.monotonic()
    status = cli._supervise(
        [[sys.executable, "-c", stubborn], [sys.executable, "-c", "raise SystemExit(3)"]],
        dict(os.environ),
        grace=1.0,
    )
    assert status == 1  # a child failed on its own
    assert time.monotonic() - started < 20  # the stubborn one was killed, not waited for


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


def test_supervise_starts_again_a_child_that_ends_after_running_a_while(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.signal, "signal", lambda *_args: None)  # leave pytest's handlers
    starts = tmp_path / "starts"
    # Runs a while and dies twice (a worker killed by a broker restart), then fails at once.
    child = (
        "import pathlib, sys, time\n"
        f"p = pathlib.Path({str(starts)!r})\n"
        "n = len(p.read_text()) if p.exists() else 0\n"
        "p.write_text('x' * (n + 1))\n"
        "if n < 2:\n"
        "    time.sleep(3.0)\n"
        "sys.exit(3)\n"
    )
    sibling = "import time; time.sleep(60)"
    logs.configure("text")  # as `worker` and `run` do, on the captured stderr
    status = cli._supervise(
        [[sys.executable, "-c", sibling], [sys.executable, "-c", child]],
        dict(os.environ),
        grace=1.0,
        restart_after=2.0,  # well above a Python start-up on a loaded machine
    )
    assert status == 1  # the third start ended at once: broken, everything stopped
    assert starts.read_text() == "xxx"
    restarts = [line for line in capsys.readouterr().err.splitlines() if "child.restarted" in line]
    assert len(restarts) == 2
    assert all("status=3" in line for line in restarts)


@pytest.mark.parametrize(
    ("environ", "grace"),
    [
        ({}, 2 * 15 + 10),
        ({"CALLBACK_TIMEOUT_SECONDS": "3"}, 16),
        ({"GRACEFUL_TIMEOUT_SECONDS": "7"}, 7),
    ],
)
def test_worker_kills_what_outlasts_the_graceful_timeout(
    embedded: Path, monkeypatch: pytest.MonkeyPatch, environ: dict[str, str], grace: float
) -> None:
    given: list[float] = []
    monkeypatch.setattr(cli, "_supervise", lambda *_a, grace: given.append(grace) or 0)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    assert main(["worker"]) == 0
    assert given == [grace]


@pytest.mark.parametrize(
    ("environ", "seconds"), [({}, "30"), ({"GRACEFUL_TIMEOUT_SECONDS": "5"}, "5")]
)
def test_serve_runs_gunicorn_with_its_graceful_timeout_and_our_stop(
    environ: dict[str, str], seconds: str
) -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "sqlite://", "BROKER_URL": "memory://", **environ}
    )
    argv = cli._gunicorn_argv(settings)
    assert _option(argv, "--graceful-timeout") == seconds
    assert _option(argv, "-c") == "python:meetinghooks.gunicorn_config"


def test_json_logs_start_celery_without_its_banners() -> None:
    text = Settings(database_url="sqlite://", broker_url="memory://")
    as_json = text.model_copy(update={"log_format": "json", "log_level": "DEBUG"})
    assert "-q" not in cli._beat_argv(text, [])
    beat = cli._beat_argv(as_json, [])
    assert beat[beat.index("workers.main") + 1] == "-q"
    assert _option(beat, "-l") == "DEBUG"
    for argv in cli._worker_argvs(as_json, []):
        assert argv[argv.index("workers.main") + 1 : argv.index("workers.main") + 3] == [
            "-q",
            "worker",
        ]
