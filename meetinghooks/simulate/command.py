"""`meetinghooks simulate`: its options, and a run from start to summary."""

from __future__ import annotations

import argparse
import json
import secrets
import threading
import time
from typing import TYPE_CHECKING

import requests
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from core.errors import ConfigError, DomainError
from meetinghooks.simulate import target
from meetinghooks.simulate.driver import Driver, Pacer, Setup
from meetinghooks.simulate.plan import Mix, plans
from meetinghooks.simulate.receiver import CallbackReceiver
from meetinghooks.simulate.report import Ledger, Summary, render, summarize

if TYPE_CHECKING:
    from collections.abc import Callable

DEFAULT_MEETINGS = 20
POLL_SECONDS = 0.2


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError("must be above 0")
        return value

    return parse


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `meetinghooks simulate`."""
    p = sub.add_parser(
        "simulate",
        help="drive a running service like a platform, verify its callbacks, print a summary",
        description="Create meetings, start them through presenter links and signed ingest, "
        "end them, repeat and reorder events, and verify every callback on a receiver of "
        "its own. Exit status 1 when a callback is missing or a request was not acknowledged.",
    )
    p.add_argument("--url", default=target.default_url(), help="the service (default: %(default)s)")
    p.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --url")
    p.add_argument("--token", help=f"access token (default ${target.TOKEN_ENV}, else a new user)")
    p.add_argument(
        "--ingest-secret",
        help="signs POST /v1/events (default $INGEST_SIGNING_SECRET, else make run's)",
    )
    p.add_argument(
        "--meetings",
        type=_positive(int),
        help=f"meetings to run (default {DEFAULT_MEETINGS}, unbounded with --duration)",
    )
    p.add_argument(
        "--duration", type=_positive(float), help="stop starting meetings after this many seconds"
    )
    p.add_argument(
        "--rate",
        type=_positive(float),
        default=20.0,
        help="requests per second, all kinds (default %(default)s)",
    )
    p.add_argument(
        "--concurrency",
        type=_positive(int),
        default=8,
        help="meetings in flight at once (default %(default)s)",
    )
    p.add_argument(
        "--ingest",
        type=_share,
        default=0.5,
        help="share of meetings the platform starts and ends through signed ingest; the rest use "
        "the presenter link and the end call (default %(default)s)",
    )
    p.add_argument(
        "--ends", type=_share, default=1.0, help="share of meetings ended (default %(default)s)"
    )
    p.add_argument(
        "--duplicates",
        type=_share,
        default=0.1,
        help="share of ingest events sent twice with the same webhook-id (default %(default)s)",
    )
    p.add_argument(
        "--out-of-order",
        type=_share,
        default=0.1,
        help="share of ended ingest meetings whose end is sent before the start "
        "(default %(default)s)",
    )
    p.add_argument(
        "--grace",
        type=_positive(float),
        default=60.0,
        help="seconds to wait for callbacks after the last request (default %(default)s)",
    )
    p.add_argument("--seed", type=int, help="makes the mix of meetings repeatable")
    p.add_argument(
        "--listen",
        default="127.0.0.1:0",
        help="address of the callback receiver (default %(default)s: a free port)",
    )
    p.add_argument(
        "--callback-url", help="base URL the service should call instead of the --listen address"
    )
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=command)  # fmt: skip


def command(args: argparse.Namespace) -> int:
    """Run the simulation; 0 when every expected callback arrived verified."""
    base_url = target.check_url(args.url, allow_remote=args.allow_remote)
    meetings = args.meetings if args.meetings or args.duration else DEFAULT_MEETINGS
    ingest_secret = target.ingest_secret(args.ingest_secret)
    if ingest_secret is None and args.ingest > 0:
        raise ConfigError(
            "no ingest secret: set INGEST_SIGNING_SECRET to the service's (or pass "
            "--ingest-secret), or --ingest 0 to start meetings through presenter links only"
        )
    mix = Mix(
        ingest=args.ingest,
        ends=args.ends,
        duplicates=args.duplicates,
        out_of_order=args.out_of_order,
    )
    _wait_for_service(base_url)
    who = target.identity(args.token)
    signing_secret = _signing_secret(base_url, who.token)
    host, port = _listen_address(args.listen)
    run_id = secrets.token_hex(4)
    receiver = CallbackReceiver(signing_secret, path=f"/hooks/{run_id}", host=host, port=port)
    shown = f"[{host}]" if ":" in host else host
    callback_base = (args.callback_url or f"http://{shown}:{receiver.port}").rstrip("/")
    setup = Setup(base_url, who.token, callback_base + receiver.path, run_id, ingest_secret)
    ledger = Ledger()
    driver = Driver(setup, ledger, Pacer(args.rate))
    console = Console(stderr=True)
    if not args.json:
        console.print(
            f"simulate: {meetings or 'unbounded'} meetings against {base_url} as {who.origin}; "
            f"callbacks to {setup.callback_url}"
        )
    receiver.start()
    try:
        summary = _run(
            driver, receiver, args, meetings=meetings, mix=mix, quiet=args.json, console=console
        )
    finally:
        receiver.stop()
    if args.json:
        print(json.dumps(summary.to_json()))  # noqa: T201  (the command's output)
    else:
        render(summary, Console())
    return 1 if summary.problems else 0


def _run(
    driver: Driver,
    receiver: CallbackReceiver,
    args: argparse.Namespace,
    *,
    meetings: int | None,
    mix: Mix,
    quiet: bool,
    console: Console,
) -> Summary:
    scripts = list(plans(mix, meetings=meetings, seed=args.seed)) if meetings else None
    began = time.monotonic()
    deadline = began + args.duration if args.duration else None
    started = 0

    def drive() -> None:
        nonlocal started
        source = iter(scripts) if scripts is not None else plans(mix, meetings=None, seed=args.seed)
        started = driver.run(source, concurrency=int(args.concurrency), deadline=deadline)

    sending = threading.Thread(target=drive, name="simulate-driver", daemon=True)
    progress = Progress(
        TextColumn("{task.description:<20}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
    )
    requests_task = progress.add_task(
        "requests sent", total=sum(s.requests for s in scripts) if scripts is not None else None
    )
    callbacks_task = progress.add_task("callbacks verified", total=0)
    interrupted = None
    with progress:
        sending.start()
        grace_ends: float | None = None
        try:
            while True:
                time.sleep(POLL_SECONDS)
                arrivals = receiver.tally.snapshot()
                outstanding = len(driver.ledger.outstanding(arrivals))
                expected = len(driver.ledger.expected)
                with driver.ledger.lock:
                    sent = sum(driver.ledger.sent.values())
                progress.update(requests_task, completed=sent)
                progress.update(callbacks_task, completed=expected - outstanding, total=expected)
                if sending.is_alive():
                    continue
                grace_ends = grace_ends or time.monotonic() + args.grace
                if not outstanding or time.monotonic() >= grace_ends:
                    break
        except KeyboardInterrupt:
            interrupted = "interrupted"
            driver.stop.set()
    sending.join(timeout=REQUEST_JOIN_SECONDS)
    return summarize(
        driver.ledger,
        receiver.tally,
        meetings=started,
        seconds=time.monotonic() - began,
        aborted=driver.abort_reason or interrupted,
    )


# After Ctrl-C the threads finish the request each is sending, at most a request timeout.
REQUEST_JOIN_SECONDS = 35.0


def _listen_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 <= number <= 65535:
        raise ConfigError(f"--listen must be HOST:PORT, such as 127.0.0.1:0 (got {text})")
    return host.strip("[]"), number


def _wait_for_service(base_url: str) -> None:
    try:
        requests.get(f"{base_url}/healthz", timeout=5).raise_for_status()
    except requests.RequestException as exc:
        raise DomainError(
            f"no service answers at {base_url}/healthz ({type(exc).__name__}); "
            "start it with `make run` in another terminal"
        ) from None


def _signing_secret(base_url: str, token: str) -> str:
    response = requests.get(
        f"{base_url}/v1/webhooks/signing-secret",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    if response.status_code != 200:
        raise DomainError(
            f"GET /v1/webhooks/signing-secret answered {response.status_code}: is the token right?"
        )
    secret: str = response.json()["signingSecret"]
    return secret
