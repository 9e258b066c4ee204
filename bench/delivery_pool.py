"""The deliveries pool as deployed, next to `make bench`'s raw `requests.Session` loop.

`bench/deliveries.py --pool` runs this: the Celery command of `meetinghooks worker deliveries`
(threads x 32) on PostgreSQL and Redis (`bench/harness.py`'s database and prefix), sending to
`bench/sink.py`. Callbacks are made as the events pool makes them (events applied in
transactions, wake-ups after commit, folded by `core.wakeups.fold`) while the pool is stopped
(SIGSTOP); then it is resumed and timed until all have succeeded (the rate counts to the last
one), with its CPU time (utime + stime of the process) until it has also taken every wake-up of
the batch. `--per-transaction N` applies N events per transaction, as a `process_events` batch
does. `--code DIR` (repeatable) also runs the pool from another copy of the code (`git archive
main | tar -x -C DIR`), each on a broker prefix of its own, alternating within every round:
before and after in one run. Such a pool gets one wake-up per delivery, as the release before
this one publishes them (its `deliver` reads one id). `--profile DIR` keeps a py-spy profile of
each pool's last fast batch.

    .venv/bin/python bench/deliveries.py --pool [--callbacks 2000] [--slow 640] [--rounds 3]
        [--per-transaction 1] [--code DIR ...] [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from core import task_names, wakeups
from core.config import Settings
from core.db import make_engine, make_session_factory
from core.models import Delivery, Meeting
from core.services import events

ROOT = Path(__file__).resolve().parent.parent

POOL_CONCURRENCY = 32  # DELIVERY_CONCURRENCY's default, as `make bench` runs it
# What py-spy samples: the thread holding the GIL (CPU), or BENCH_PYSPY=--idle for every thread.
PYSPY_MODE = os.environ.get("BENCH_PYSPY", "--gil").split()
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class PoolWorker:
    """One deliveries pool: the code it runs, its broker prefix, its process, its publisher."""

    label: str
    process: subprocess.Popen[bytes]
    log: Path
    factory: Any  # a session factory that publishes its deliver wake-ups to this pool
    prefix: str
    samples: dict[str, list[float]] = field(default_factory=dict)

    def broker_idle(self) -> bool:
        """Tell whether the pool's queue is empty and no message is held unacknowledged."""
        import redis  # noqa: PLC0415  (celery[redis] brings it)

        from bench import harness  # noqa: PLC0415

        client = redis.Redis.from_url(harness.REDIS_URL)
        try:
            return not client.llen(f"{self.prefix}deliveries") and not client.hlen(
                f"{self.prefix}unacked"
            )
        finally:
            client.close()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signum)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the pool process (all its threads) so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS


def start_pool(stack: Any, label: str, code: Path, prefix: str, *, fold: bool) -> PoolWorker:
    """Start `meetinghooks worker deliveries`'s Celery command from `code`, on its own prefix.

    Without `fold`, each transaction's deliver wake-ups go one per delivery, unfolded.
    """
    from celery import Celery  # noqa: PLC0415
    from sqlalchemy.orm import sessionmaker  # noqa: PLC0415

    from meetinghooks.cli import DELIVERIES, _pool_argv  # noqa: PLC0415

    env = {**stack.env, "BROKER_KEY_PREFIX": prefix, "PYTHONPATH": str(code)}
    settings = Settings.from_env(env)
    argv = _pool_argv(DELIVERIES, settings, ["-n", f"deliveries-{label}@%h"])
    log = stack.workdir / f"deliveries-{label}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    publisher = Celery("bench", broker=settings.broker_url)
    publisher.conf.update(
        task_serializer="json", broker_transport_options={"global_keyprefix": prefix}
    )

    def publish(task_name: str, kwargs: dict[str, Any]) -> None:
        if task_name != task_names.DELIVER:  # the events path's other wake-ups go elsewhere
            return
        if fold:
            publisher.send_task(task_name, kwargs=kwargs, queue=DELIVERIES)
            return
        for delivery_id in [kwargs["delivery_id"], *kwargs.get("more_delivery_ids", [])]:
            publisher.send_task(task_name, kwargs={"delivery_id": delivery_id}, queue=DELIVERIES)

    base = make_session_factory(make_engine(stack.database_url))
    factory = sessionmaker(class_=base.class_, **base.kw)
    wakeups.publish_after_commit(factory, publish)
    deadline = time.monotonic() + 60
    while b" ready." not in log.read_bytes():
        if time.monotonic() > deadline or process.poll() is not None:
            raise SystemExit(f"bench: the {label} pool did not start, see {log}")
        time.sleep(0.2)
    return PoolWorker(label, process, log, factory, prefix)


def make_callbacks(worker: PoolWorker, meeting_ids: list[int], per_transaction: int) -> list[int]:
    """Emit one meeting.start per meeting, `per_transaction` events in each transaction.

    The events pool applies a `process_events` batch in one transaction; the wake-ups its
    transaction noted go out after its commit, folded as `core.wakeups.fold` folds them.
    """
    delivery_ids: list[int] = []
    for start in range(0, len(meeting_ids), per_transaction):
        with worker.factory.begin() as session:
            for meeting_id in meeting_ids[start : start + per_transaction]:
                meeting = session.get(Meeting, meeting_id)
                _, applied = events.emit_internal(session, meeting, "meeting.start", source="api")
                delivery_ids.extend(applied.delivery_ids)
    return delivery_ids


def drain(
    worker: PoolWorker, engine: Any, delivery_ids: list[int], profile: Path | None = None
) -> tuple[float, float]:
    """Resume the pool on its queued callbacks; return (callbacks/s, CPU ms per callback).

    The CPU time runs until the broker holds none of the pool's messages and the pool's CPU
    time stands still (its last messages have run). With `profile`, py-spy samples the
    thread holding the GIL over the same span (100 Hz, raw format).
    """
    query = sa.select(sa.func.count(), sa.func.max(Delivery.completed_at)).where(
        Delivery.id.in_(delivery_ids), Delivery.status == "succeeded"
    )
    cpu_before = worker.cpu_seconds()
    since = time.time()
    worker.signal(signal.SIGCONT)
    profiler = None
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        with (profile.parent / "py-spy.log").open("ab") as log:
            profiler = subprocess.Popen(
                [str(ROOT / ".venv/bin/py-spy"), "record", *PYSPY_MODE, "-r", "100", "-f", "raw",
                 "-o", str(profile), "--pid", str(worker.process.pid)],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
    deadline = time.monotonic() + 300
    while True:
        with engine.connect() as conn:
            done, last = conn.execute(query).one()
        if done >= len(delivery_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    # The CPU figure counts every wake-up message of the batch, also those the pool takes
    # after the last callback went out (their deliveries were drained before them).
    while not worker.broker_idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    # Messages the pool took before the queue emptied may still be running (without ack
    # emulation nothing in Redis says so): wait until its CPU time stands still.
    settled = worker.cpu_seconds()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = worker.cpu_seconds()
        if now - settled < 0.02:
            break
        settled = now
    cpu = settled - cpu_before
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)
    worker.signal(signal.SIGSTOP)
    if done < len(delivery_ids):
        raise SystemExit(f"bench: {worker.label}: {done}/{len(delivery_ids)} delivered")
    return done / max(1e-3, last.timestamp() - since), cpu * 1000 / done


@dataclass
class PoolBench:
    """One `--pool` run: the pools, the seeded meetings per sink path, the sink's port."""

    pools: list[PoolWorker]
    engine: Any
    port: int
    meetings: dict[str, Any]  # sink path -> iterator of meeting ids not used yet

    per_transaction: int = 1

    def callbacks(self, worker: PoolWorker, path: str, count: int) -> list[int]:
        """Queue `count` fresh callbacks to the sink's `path` for this pool."""
        meetings = [next(self.meetings[path]) for _ in range(count)]
        return make_callbacks(worker, meetings, self.per_transaction)

    def round(self, args: argparse.Namespace, last: bool) -> str:
        """Drain a fast and a 50 ms batch through each pool; return the round's line."""
        line = []
        for worker in self.pools:
            ids = self.callbacks(worker, "fast", args.callbacks)
            profile = args.profile / f"{worker.label}.raw" if args.profile and last else None
            rate, cpu = drain(worker, self.engine, ids, profile)
            slow_rate, slow_cpu = drain(
                worker, self.engine, self.callbacks(worker, "slow", args.slow)
            )
            for name, value in (
                ("fast", rate), ("fast_cpu", cpu), ("slow", slow_rate), ("slow_cpu", slow_cpu)
            ):  # fmt: skip
                worker.samples.setdefault(name, []).append(value)
            line.append(
                f"{worker.label} {rate:.0f}/s ({cpu:.2f} ms CPU each), "
                f"50 ms sink {slow_rate:.0f}/s ({slow_cpu:.2f} ms);"
            )
        return " ".join(line)


def pool_main(argv: list[str]) -> None:
    """Measure the deliveries pool (each `--code`) against the raw requests loop, alternating."""
    from bench import harness, load, sink  # noqa: PLC0415
    from bench.suite import callback_body  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="deliveries.py --pool")
    parser.add_argument("--callbacks", type=int, default=2000, help="fast callbacks per round")
    parser.add_argument("--slow", type=int, default=640, help="50 ms callbacks per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--code", action="append", type=Path, default=[], help="another checkout")
    parser.add_argument("--profile", type=Path, help="py-spy raw profiles of the last round here")
    parser.add_argument(
        "--per-transaction", type=int, default=1, help="events applied per transaction"
    )
    args = parser.parse_args(argv)
    codes = {"this": ROOT, **{f"code{i}": path.resolve() for i, path in enumerate(args.code)}}

    stack = harness.new_stack()
    engine = make_engine(stack.database_url)
    pools: list[PoolWorker] = []
    sink_process = None
    warm = 100
    try:
        per_path = {
            "fast": len(codes) * (args.rounds * args.callbacks + warm),
            "slow": len(codes) * args.rounds * args.slow,
        }
        port = harness.free_port()
        urls = {path: f"http://127.0.0.1:{port}/{path}/hook" for path in per_path}
        secret, seeded = harness.seed(
            stack.database_url, {urls[path]: count for path, count in per_path.items()}
        )
        sink_process, _ = sink.start(secret, port)
        prefix = stack.env["BROKER_KEY_PREFIX"]
        pools = [
            start_pool(stack, label, code, f"{prefix}{label}:", fold=label == "this")
            for label, code in codes.items()
        ]
        bench = PoolBench(
            pools, engine, port, {p: iter(seeded[urls[p]]) for p in per_path}, args.per_transaction
        )
        for worker in pools:
            worker.signal(signal.SIGSTOP)
            drain(worker, engine, bench.callbacks(worker, "fast", warm))
        print(
            f"bench: {len(codes)} pool(s) x {POOL_CONCURRENCY} threads, {args.callbacks} fast + "
            f"{args.slow} 50 ms callbacks per round, {args.per_transaction} per transaction; "
            + ", ".join(f"{label}={code}" for label, code in codes.items()),
            flush=True,
        )
        baseline: list[float] = []
        for number in range(1, args.rounds + 1):
            line = bench.round(args, last=number == args.rounds)
            count, elapsed = load.in_process(
                load.requests_loop, url=f"http://127.0.0.1:{port}/base", secret=secret,
                body=callback_body(), threads=POOL_CONCURRENCY, seconds=5, limit=50_000,
            )  # fmt: skip
            baseline.append(count / elapsed)
            print(f"round {number}: {line} requests loop {count / elapsed:.0f}/s", flush=True)
        summarize(bench, baseline, sink.SLOW_SECONDS)
    finally:
        for worker in pools:
            worker.signal(signal.SIGCONT)
            worker.process.terminate()
            try:
                worker.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.process.kill()
        if sink_process is not None:
            sink_process.terminate()
        engine.dispose()
        harness.drop(stack)


def summarize(bench: PoolBench, baseline: list[float], slow_seconds: float) -> None:
    """Print what the sink saw and each pool's medians next to the baselines."""
    arrivals = requests.get(f"http://127.0.0.1:{bench.port}/_arrivals", timeout=30).json()
    twice = sum(1 for got in arrivals["arrivals"].values() if len(got) > 1)
    print(
        f"sink: {len(arrivals['arrivals'])} webhook-ids, {twice} received more than once, "
        f"{len(arrivals['bad'])} failed verification"
    )
    ideal = POOL_CONCURRENCY / slow_seconds
    base = statistics.median(baseline)
    for worker in bench.pools:
        m = {name: statistics.median(values) for name, values in worker.samples.items()}
        print(
            f"median {worker.label}: delivery_ratio {m['fast'] / base:.3f} "
            f"({m['fast']:.0f}/s vs {base:.0f}/s), delivery_50ms_efficiency "
            f"{m['slow'] / ideal:.3f} ({m['slow']:.0f}/s vs {ideal:.0f}/s), CPU per callback "
            f"{m['fast_cpu']:.2f} ms (fast) {m['slow_cpu']:.2f} ms (50 ms)"
        )
