"""Command-line entry point: `meetinghooks users|tokens|db|serve|worker|beat|run|...`.

`analytics` and `deliveries replay` live in modules of their own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import start_http_server

from core import logs, migrate
from core.config import Settings
from core.db import make_engine, make_session_factory
from core.errors import ConfigError, DomainError
from core.metrics_export import registry_for
from core.models import SCOPES
from core.services import accounts
from meetinghooks import analytics_cli, parent_death, replay_cli, simulate, slow_clients

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

log = logs.get_logger("meetinghooks")
# gunicorn's default: how long `serve` lets requests in flight finish after a SIGTERM.
SERVE_GRACEFUL_SECONDS = 30


def _settings() -> Settings:
    return Settings.from_env()


def _session_factory(settings: Settings) -> sessionmaker[Session]:
    if settings.embedded:
        # The embedded database migrates itself, so `users create` works before `make run`.
        migrate.upgrade(settings.database_url)
    return make_session_factory(make_engine(settings.database_url))


def cmd_users_create(args: argparse.Namespace) -> int:
    """Create a user and print its token and signing secret."""
    settings = _settings()
    with _session_factory(settings).begin() as session:
        user, issued = accounts.create_user(
            session, email=args.email, full_name=args.name, personal_url=args.personal_url
        )
        result = {
            "userId": user.id,
            "email": user.email,
            "fullName": user.full_name,
            "personalUrl": user.personal_url,
            "accessToken": issued.token,
            "scopes": sorted(issued.record.scope_set),
            "signingSecret": user.signing_secret,
        }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"user {result['userId']} created: {user.email}")
        print(f"access token (shown once): {issued.token}")
        print(f"webhook signing secret:    {user.signing_secret}")
    return 0


def cmd_tokens_create(args: argparse.Namespace) -> int:
    """Issue another access token for a user."""
    settings = _settings()
    scopes = _scopes(args.scope or [])
    with _session_factory(settings).begin() as session:
        user = accounts.find_user(session, args.email)
        issued = accounts.create_token(session, user=user, scopes=scopes, label=args.label)
        result = {"userId": user.id, "accessToken": issued.token, "scopes": list(scopes)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"access token (shown once): {issued.token}")
    return 0


def _scopes(values: Sequence[str]) -> tuple[str, ...]:
    """Return the scopes named by repeated and/or comma-separated options; all when none."""
    named = [part.strip() for value in values for part in value.split(",") if part.strip()]
    unknown = sorted(set(named) - set(SCOPES))
    if unknown:
        raise DomainError(f"unknown scope {', '.join(unknown)}; use {', '.join(SCOPES)}")
    return tuple(dict.fromkeys(named)) or SCOPES


def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    """Revoke an access token."""
    settings = _settings()
    given = args.token_option or args.token
    if not given:
        raise DomainError("give the token to revoke ('-' reads it from stdin)")
    read_stdin = given == "-"
    token = sys.stdin.readline().strip() if read_stdin else given
    with _session_factory(settings).begin() as session:
        record = accounts.revoke_token(session, token)
        result = {"userId": record.user_id, "revoked": True}
    if args.json:
        print(json.dumps(result))
    else:
        print("token revoked")
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    """Migrate the database to the newest schema."""
    migrate.upgrade(_settings().database_url, args.revision)
    print("database is at", args.revision)
    return 0


def _gunicorn_argv(settings: Settings) -> list[str]:
    try:
        slow_clients.read_timeout()  # refuse a bad value here, not in every gunicorn worker
    except ValueError as exc:
        raise DomainError(str(exc)) from None
    return [
        sys.executable, "-m", "gunicorn", "receiver.wsgi:app",
        "--bind", f"{settings.host}:{settings.port}",
        "--workers", os.environ.get("WEB_CONCURRENCY", "2"),
        "--threads", os.environ.get("WEB_THREADS", "4"),
        # Each request must arrive within REQUEST_READ_TIMEOUT_SECONDS: slowloris clients
        # would otherwise hold every thread (meetinghooks/slow_clients.py).
        "--worker-class", "meetinghooks.slow_clients.DeadlineThreadWorker",
        "--access-logfile", "-",
        # Presenter links are one-time secrets in the path: the access log shows them redacted.
        # LOG_FORMAT=json makes its lines JSON, the access log's with their fields.
        "--logger-class", "meetinghooks.access_log.RedactingLogger",
        # SIGTERM: refuse new connections, let requests in flight finish for this long, exit.
        "-c", "python:meetinghooks.gunicorn_config",
        "--graceful-timeout", str(settings.graceful_timeout_seconds or SERVE_GRACEFUL_SECONDS),
        "--forwarded-allow-ips", os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
        # gunicorn 27's control socket sits at one path per user (~/.gunicorn/gunicorn.ctl), so
        # two receivers on one machine would take it from each other; nothing of ours uses it.
        "--no-control-socket",
    ]  # fmt: skip


def _celery_argv(settings: Settings, *args: str) -> list[str]:
    # JSON logs: every line is a JSON object, so no banners (-q); Celery logs through
    # core.logs (workers.celery_app.configure_logging).
    quiet = ["-q"] if settings.log_format == "json" else []
    return [sys.executable, "-m", "celery", "-A", "workers.main", *quiet, *args]


# The two queues of workers.celery_app, each served by a pool of its own: a slow callback
# must never hold up event processing. The sweeps go to the events queue.
EVENTS, DELIVERIES = "events", "deliveries"
POOLS = (EVENTS, DELIVERIES)
# `meetinghooks run` gives a worker's children this long after their SIGTERM.
RUN_STOP_SECONDS = 10.0
# Two-pool form: options that configure one pool go to the events pool (beat, embedded with
# -B, must run once); these cannot be shared at all.
_EVENTS_POOL_FLAGS = ("-B", "--beat")
_EVENTS_POOL_OPTIONS = ("-c", "--concurrency", "-s", "--schedule", "--schedule-filename")
_NAME_OPTIONS = ("-n", "--hostname")
_ONE_POOL_OPTIONS = ("-Q", "--queues", "-X", "--exclude-queues", "-P", "--pool", "--autoscale")


def _pool_argv(pool: str, settings: Settings, extra: Sequence[str]) -> list[str]:
    """Return the celery command of one pool; `extra` comes last, so that it wins."""
    if pool == EVENTS:
        own = ["-P", "prefork", "--concurrency", str(settings.event_concurrency)]
    else:
        # Deliveries mostly wait on receivers: threads hold many attempts at once. The threads
        # pool enforces no time limits; the attempt deadline (core.http_deadline) bounds them.
        own = ["-P", "threads", "--concurrency", str(settings.delivery_concurrency)]
    return _celery_argv(
        settings, "worker", "-Q", pool, *own, "-n", f"{pool}@%h", "-l", settings.log_level, *extra
    )


def _worker_argvs(settings: Settings, extra: Sequence[str]) -> list[list[str]]:
    """Return the celery commands of `meetinghooks worker [events|deliveries] [celery args]`."""
    if extra and extra[0] in POOLS:
        return [_pool_argv(extra[0], settings, extra[1:])]
    per_pool = _split_options(extra)
    return [_pool_argv(pool, settings, per_pool[pool]) for pool in POOLS]


def _split_options(extra: Sequence[str]) -> dict[str, list[str]]:
    """Share celery options between the two pools; see _EVENTS_POOL_OPTIONS."""
    shared: list[str] = []
    events_only: list[str] = []
    hostname: str | None = None
    tokens = list(extra)
    while tokens:
        token = tokens.pop(0)
        name = token.split("=", 1)[0] if token.startswith("--") else token[:2]
        attached = token[len(name) :].removeprefix("=") or None
        if name in _ONE_POOL_OPTIONS:
            raise DomainError(
                f"{name} names one pool's work; run that pool alone: "
                f"meetinghooks worker {'|'.join(POOLS)} {name} ..."
            )
        if name in _EVENTS_POOL_FLAGS:
            if attached is not None:
                raise DomainError(f"write {name} on its own")
            events_only.append(token)
            continue
        if name not in (*_EVENTS_POOL_OPTIONS, *_NAME_OPTIONS):
            shared.append(token)
            continue
        if attached is None:
            if not tokens:
                raise DomainError(f"{name} needs a value")
            attached = tokens.pop(0)
        if name in _NAME_OPTIONS:
            hostname = attached
        else:
            events_only += [name, attached]
    per_pool = {EVENTS: [*shared, *events_only], DELIVERIES: list(shared)}
    if hostname is not None:  # one node name each: `-n a@%h` -> events-a@%h, deliveries-a@%h
        for pool in POOLS:
            per_pool[pool] += ["-n", f"{pool}-{hostname}"]
    return per_pool


def _beat_argv(settings: Settings, extra: Sequence[str]) -> list[str]:
    schedule = os.environ.get(
        "BEAT_SCHEDULE_FILE", str(Path(tempfile.gettempdir()) / "meetinghooks-beat-schedule")
    )
    return _celery_argv(settings, "beat", "-l", settings.log_level, "-s", schedule, *extra)


def _with_shared_metrics() -> dict[str, str]:
    """Return the environment for child processes, with one Prometheus multiprocess directory.

    gunicorn runs several receiver processes and a Celery worker several pool processes; a
    scrape reaches one of them, so without a shared directory /metrics would show that
    process's counters only. A fresh directory at each start, because leftover files of an
    earlier run would be counted again.
    """
    env = dict(os.environ)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):
        env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="meetinghooks-metrics-")
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the receiver under gunicorn."""
    settings = _settings()
    env = _with_shared_metrics()
    os.execve(sys.executable, _gunicorn_argv(settings), env)  # noqa: S606  (replace this process)


def _serve_metrics(settings: Settings, env: dict[str, str]) -> None:
    """Serve the metrics of our children on WORKER_METRICS_PORT, if set.

    Both pools' workers and their pool processes write to `env`'s directory; they are added
    up here, once: two Celery workers serving them would both want the port.
    """
    if settings.worker_metrics_port is None:
        return
    registry = registry_for(env["PROMETHEUS_MULTIPROC_DIR"])
    address = f"{settings.worker_metrics_host}:{settings.worker_metrics_port}"
    try:
        start_http_server(settings.worker_metrics_port, settings.worker_metrics_host, registry)
    except OSError as exc:
        raise DomainError(f"cannot serve worker metrics on {address}: {exc}") from None
    log.info("meetinghooks.worker_metrics.serving", url=f"http://{address}/metrics")


# A child that ran this long before it ended is started again; one that ended sooner is broken.
RESTART_AFTER_SECONDS = 30.0


def _supervise(
    argvs: Sequence[list[str]],
    env: dict[str, str],
    *,
    grace: float,
    restart_after: float = RESTART_AFTER_SECONDS,
) -> int:
    """Run the commands as children until we are told to stop, or one fails at once.

    A child that ends after running `restart_after` seconds is started again: a Celery worker
    can die of a broker restart (kombu's restore of unacked messages on a lost Redis connection
    raises past Celery), and the work it held waits in the database for its sweep. A child that
    ends sooner is broken (a bad option, a broker it cannot reach at start): then all stop and
    the status says so. Each child runs in a session of its own: a Ctrl-C reaches only us, and
    each child then gets exactly one SIGTERM (had the terminal's SIGINT reached them too,
    gunicorn could take our SIGTERM, arriving during its quick shutdown, as a request for a
    graceful one, and a Celery worker would go from warm to cold shutdown). What still runs
    `grace` seconds later, or at a second Ctrl-C, is killed with its whole process group. Should
    we be killed outright, each child gets a SIGTERM from the kernel (`parent_death`).
    """
    signals = 0

    def stop(_signum: int, _frame: object) -> None:
        nonlocal signals
        signals += 1

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: terminal closed
        signal.signal(signum, stop)
    children: list[subprocess.Popen[bytes]] = []
    started: list[float] = []

    def start(argv: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(parent_death.launched(argv), env=env, start_new_session=True)

    try:
        for argv in argvs:
            children.append(start(argv))
            started.append(time.monotonic())
        broken = False
        while not signals and not broken:
            time.sleep(0.2)
            for index, child in enumerate(children):
                if signals or child.poll() is None:
                    continue
                ran = time.monotonic() - started[index]
                if ran < restart_after:
                    broken = True
                    break
                log.warning(
                    "meetinghooks.child.restarted",
                    command=" ".join(argvs[index][-4:]),
                    status=child.returncode,
                    ran_seconds=round(ran),
                )
                children[index] = start(argvs[index])
                started[index] = time.monotonic()
    finally:
        asked = signals
        for child in children:
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + grace
        while (
            any(child.poll() is None for child in children)
            and time.monotonic() < deadline
            and signals <= asked
        ):
            time.sleep(0.1)
        for child in children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
    failed = [child for child in children if child.returncode not in (0, -signal.SIGTERM)]
    return 1 if failed and not signals else 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the Celery workers: the events and the deliveries pool, or one of them."""
    settings = _settings()
    logs.configure(settings.log_format, settings.log_level)
    argvs = _worker_argvs(settings, args.extra)
    env = _with_shared_metrics()  # every pool's counters, for WORKER_METRICS_PORT
    _serve_metrics(settings, env)
    # A warm shutdown lets the tasks in flight end; by default long enough for the longest
    # callback attempt (twice the timeout). What is killed is given back: see DECISIONS.
    grace = settings.graceful_timeout_seconds or 2 * settings.callback_timeout_seconds + 10
    return _supervise(argvs, env, grace=grace)


def cmd_beat(args: argparse.Namespace) -> int:
    """Run Celery beat: the periodic sweeps."""
    os.execv(sys.executable, _beat_argv(_settings(), args.extra))  # noqa: S606  (replace this process)


def cmd_run(args: argparse.Namespace) -> int:
    """Migrate, then run receiver, worker and beat together until interrupted."""
    settings = _settings()
    logs.configure(settings.log_format, settings.log_level)
    migrate.upgrade(settings.database_url)
    env = _with_shared_metrics()  # the workers' counters then show on the receiver's /metrics
    _serve_metrics(settings, env)
    argvs = [*_worker_argvs(settings, []), _beat_argv(settings, []), _gunicorn_argv(settings)]
    mode = "embedded (SQLite + SQLAlchemy broker under ./var)" if settings.embedded else "external"
    if settings.log_format == "json":
        log.info("meetinghooks.run.starting", base_url=settings.base_url, mode=mode)
        return _supervise(argvs, env, grace=RUN_STOP_SECONDS)
    print(
        f"\nmeetinghooks is starting on {settings.base_url} ({mode}).\n"
        "Create a user in another terminal, from this directory:\n"
        "  .venv/bin/meetinghooks users create --email you@example.com --name 'You'"
        " --personal-url you\n"
        "Stop with Ctrl-C.\n",
        flush=True,
    )
    return _supervise(argvs, env, grace=RUN_STOP_SECONDS)


def cmd_analytics(args: argparse.Namespace) -> int:
    """Print a user's analytics summary or timeseries."""
    print(analytics_cli.run(args, lambda: _session_factory(_settings())), end="")
    return 0


def cmd_deliveries_replay(args: argparse.Namespace) -> int:
    """Re-send a user's matching callbacks with new webhook-ids and print the count."""
    from receiver.tasks import CeleryEnqueuer  # noqa: PLC0415  (only this command sends)

    settings = _settings()
    factory = _session_factory(settings)
    enqueuer = CeleryEnqueuer(settings)
    try:
        print(replay_cli.run(args, factory, enqueuer), end="")
    finally:
        enqueuer.close()  # sends what the commit published before the process ends
        factory.kw["bind"].dispose()
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser for every sub-command."""
    parser = argparse.ArgumentParser(prog="meetinghooks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    users = sub.add_parser("users", help="manage users").add_subparsers(
        dest="action", required=True
    )
    create = users.add_parser("create", help="create a user; prints its token and signing secret")
    create.add_argument("--email", required=True)
    create.add_argument("--name", required=True)
    create.add_argument("--personal-url", default=None)
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=cmd_users_create)

    tokens = sub.add_parser("tokens", help="manage access tokens").add_subparsers(
        dest="action", required=True
    )
    tcreate = tokens.add_parser("create", help="issue another token for a user")
    tcreate.add_argument("--email", required=True)
    tcreate.add_argument(
        "--scope",
        "--scopes",
        action="append",
        help=f"{', '.join(SCOPES)}; repeat or separate with commas; default all",
    )
    tcreate.add_argument("--label", default=None)
    tcreate.add_argument("--json", action="store_true")
    tcreate.set_defaults(func=cmd_tokens_create)
    revoke = tokens.add_parser("revoke", help="revoke a token ('-' reads it from stdin)")
    revoke.add_argument("token", nargs="?")
    revoke.add_argument("--token", dest="token_option", help="the token (same as the argument)")
    revoke.add_argument("--json", action="store_true")
    revoke.set_defaults(func=cmd_tokens_revoke)

    dbp = sub.add_parser("db", help="database").add_subparsers(dest="action", required=True)
    upgrade = dbp.add_parser("upgrade", help="apply migrations")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(func=cmd_db_upgrade)

    sub.add_parser("serve", help="run the receiver (gunicorn)").set_defaults(func=cmd_serve)
    sub.add_parser(
        "worker",
        help="run the events and the deliveries pool ('worker events|deliveries': one of them);"
        " extra arguments go to celery",
    ).set_defaults(func=cmd_worker, passes_extra=True)
    beat = sub.add_parser("beat", help="run the Celery beat; extra arguments go to celery")
    beat.set_defaults(func=cmd_beat, passes_extra=True)
    sub.add_parser("run", help="migrate and run everything (make run)").set_defaults(func=cmd_run)
    analytics_cli.add_parser(sub, cmd_analytics)
    simulate.add_parser(sub)
    replay_cli.add_parser(sub, cmd_deliveries_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    # `worker` and `beat` hand unknown options (--concurrency 8, -l DEBUG) to celery.
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passes_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"meetinghooks: {exc}", file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"meetinghooks: {exc.message}", file=sys.stderr)
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
