"""`make bench`: the service as deployed, next to the fastest baselines measured in the same run.

Starts `meetinghooks serve`, `meetinghooks worker` (both pools) and `meetinghooks beat` on a
PostgreSQL database and a Redis key prefix of this run's own, plus a bare Flask app under the same
gunicorn settings and a callback sink. Each of `--rounds` rounds alternates candidate and
baseline: ingest at saturation, bare Flask, a raw psycopg loop; then the backlog is processed
(events pool alone), then delivered (deliveries pool alone), each next to its raw loop; then a
batch to a sink that answers in 50 ms. Afterwards latency at half load and end to end at half
capacity, then the correctness check. Prints one table and writes bench/results/latest.json
(see bench/README.md). Exits 1 when the run was not correct; a missed goal is only reported.

    .venv/bin/python bench/suite.py [--rounds 3] [--seconds 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import harness, load, sink  # noqa: E402
from core.models import Delivery, Event  # noqa: E402

CONNECTIONS = 32  # the load generator's keep-alive connections (the wrk setting)
WEB_WORKERS, WEB_THREADS = 2, 4  # `meetinghooks serve` defaults: 8 requests at once
EVENT_CONCURRENCY, DELIVERY_CONCURRENCY = 2, 32  # the pools' defaults
INGEST_CAP = 2500  # signed events per ingest round, at most
PIPELINE_BATCH = 1500  # events pushed through every stage at once to find the pipeline's capacity
SLOW_BATCH = 640  # callbacks to the 50 ms sink per round: about one second at the goal
RESULTS = ROOT / "bench" / "results" / "latest.json"


class Meetings:
    """Hand out seeded meeting ids, each once: one event, one callback per meeting."""

    def __init__(self, ids: list[int]) -> None:
        self._ids: Iterator[int] = iter(ids)
        self.left = len(ids)

    def take(self, count: int) -> list[int]:
        count = min(count, self.left)
        self.left -= count
        return [next(self._ids) for _ in range(count)]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * q + 0.5) - 1))]


class Run:
    """One `make bench` run: the stack, the sink, and everything acknowledged so far."""

    def __init__(
        self, stack: harness.Stack, sink_port: int, user_secret: str, meetings: dict[str, Meetings]
    ) -> None:
        self.stack = stack
        self.user_secret = user_secret
        self.sink_url = f"http://127.0.0.1:{sink_port}"
        self.meetings = meetings
        self.acknowledged: list[str] = []
        self.non_2xx = 0
        # What the non-2xx were: a status code, or "error" for a connection that broke.
        self.refusals: dict[str, int] = {}
        self.engine = sa.create_engine(stack.database_url)
        # The sink's arrivals as `arrivals()` last fetched them, and how many that was.
        self.known: dict[str, list[list[Any]]] = {}
        self.seen = 0

    def ingest(
        self, pool: str, count: int, seconds: float, rate: float | None = None
    ) -> load.SignedLoad:
        """Post one signed event per meeting of `pool` to the receiver; remember the 2xx."""
        ids = self.meetings[pool].take(count)
        done = load.in_process(
            load.signed_load,
            secret=self.stack.ingest_secret,
            meeting_ids=ids,
            port=self.stack.port,
            connections=CONNECTIONS,
            seconds=seconds,
            rate=rate,
        )
        self.acknowledged += done.result.acknowledged
        self.non_2xx += done.result.non_2xx
        for status, n in done.result.statuses.items():
            if not 200 <= status < 300:
                self.refusals[str(status)] = self.refusals.get(str(status), 0) + n
        if done.result.errors:
            self.refusals["error"] = self.refusals.get("error", 0) + done.result.errors
        return done

    def bare(self, seconds: float) -> load.LoadResult:
        """The same signed load against the bare Flask route."""
        ids = list(range(1, 20_001))  # the bare route reads no meeting; the bound is the time
        return load.in_process(
            load.signed_load,
            secret=self.stack.ingest_secret,
            meeting_ids=ids,
            port=self.stack.bare_port,
            connections=CONNECTIONS,
            seconds=seconds,
        ).result

    def psycopg(self, threads: int, seconds: float) -> float:
        commits, elapsed = load.in_process(
            load.psycopg_loop, dsn=self.stack.dsn, threads=threads, seconds=seconds, limit=50_000
        )
        return commits / elapsed

    def wait_processed(self, ids: list[str], since: float, timeout: float = 120) -> float:
        """Wait until the events are processed; return events/s from `since` to the last one."""
        query = sa.select(sa.func.count(), sa.func.max(Event.processed_at)).where(
            Event.source_event_id.in_(ids), Event.processed_at.is_not(None)
        )
        deadline = time.monotonic() + timeout
        while True:
            with self.engine.connect() as conn:
                count, last = conn.execute(query).one()
            if count >= len(ids) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not count or last is None:
            return 0.0
        return float(count) / max(1e-3, last.timestamp() - since)

    def delivery_ids(self, ids: list[str]) -> list[str]:
        """Return the callbacks' `webhook-id`s of the events acknowledged as `ids`."""
        query = (
            sa.select(Delivery.message_id)
            .join(Event, Delivery.event_id == Event.id)
            .where(Event.source_event_id.in_(ids))
        )
        with self.engine.connect() as conn:
            return list(conn.scalars(query))

    def sink_record(self) -> dict[str, Any]:
        record: dict[str, Any] = requests.get(f"{self.sink_url}/_arrivals", timeout=30).json()
        return record

    def arrivals(self) -> dict[str, list[list[Any]]]:
        """Return the sink's arrivals so far, fetching only those new since the last call."""
        got = requests.get(f"{self.sink_url}/_log?from={self.seen}", timeout=30).json()["log"]
        for msg_id, *arrival in got:
            self.known.setdefault(msg_id, []).append(arrival)
        self.seen += len(got)
        return self.known

    def wait_delivered(self, message_ids: list[str], since: float, timeout: float = 120) -> float:
        """Wait until the sink has every callback; return callbacks/s from `since` to the last."""
        deadline = time.monotonic() + timeout
        wanted = set(message_ids)
        while True:
            arrivals = self.arrivals()
            got = [arrivals[m][0][1] for m in wanted if m in arrivals]
            if len(got) >= len(wanted) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        return len(got) / max(1e-3, max(got) - since) if got else 0.0

    def drain(self, acknowledged: list[str]) -> tuple[float, float]:
        """Process (events pool alone), then deliver (deliveries pool alone); return both rates."""
        stack = self.stack
        since = time.time()
        stack.resume("events")
        processed = self.wait_processed(acknowledged, since)
        stack.pause("events")
        message_ids = self.delivery_ids(acknowledged)
        since = time.time()
        stack.resume("deliveries")
        delivered = self.wait_delivered(message_ids, since)
        stack.pause("deliveries")
        return processed, delivered


def measure(run: Run, args: argparse.Namespace) -> dict[str, list[float]]:
    """Alternate candidate and baselines for `args.rounds` rounds; return the samples."""
    stack = run.stack
    samples: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        samples.setdefault(name, []).append(value)

    stack.pause("events", "deliveries", "beat")
    # A short warm-up of both receivers and of the pools' connections, not measured.
    warm = run.ingest("fast", 50, 2)
    run.bare(1)
    run.drain(warm.result.acknowledged)
    for number in range(1, args.rounds + 1):
        # Outside every timed phase: what autovacuum would have done in the meantime.
        if stack.vacuum_unless_autovacuum() and number == 1:
            print("autovacuum is off on this server: the bench vacuums before each round")
        candidate = run.ingest("fast", INGEST_CAP, args.seconds)
        bare = run.bare(args.seconds)
        raw8 = run.psycopg(WEB_WORKERS * WEB_THREADS, args.seconds)
        add("ingest", candidate.result.rate)
        add("bare", bare.rate)
        add("psycopg8", raw8)
        processed, delivered = run.drain(candidate.result.acknowledged)
        add("process", processed)
        add("psycopg2", run.psycopg(EVENT_CONCURRENCY, args.seconds))
        add("deliver", delivered)
        count, elapsed = load.in_process(
            load.requests_loop, url=f"{run.sink_url}/base", secret=run.user_secret,
            body=callback_body(), threads=DELIVERY_CONCURRENCY, seconds=args.seconds,
            limit=50_000,
        )  # fmt: skip
        add("requests", count / elapsed)
        slow = run.ingest("slow", SLOW_BATCH, 30)
        _, slow_rate = run.drain(slow.result.acknowledged)
        add("slow", slow_rate)
        print(
            f"round {number}: ingest {candidate.result.rate:.0f}/s (bare {bare.rate:.0f}/s, "
            f"psycopg x8 {raw8:.0f}/s), process {processed:.0f}/s, deliver {delivered:.0f}/s "
            f"(requests {count / elapsed:.0f}/s), 50 ms sink {slow_rate:.0f}/s",
            flush=True,
        )
    # Latency at half the ingest saturation, pools still paused as in the ingest rounds.
    half = median(samples["ingest"]) / 2
    latency = run.ingest("fast", int(half * args.seconds), args.seconds, rate=half)
    samples["ingest_latency"] = latency.result.latencies_ms
    run.drain(latency.result.acknowledged)
    # End to end at half the pipeline's capacity, everything running as deployed. The stages
    # share two cores, so the capacity is measured with all of them running (a saturating batch,
    # first request to last callback), not taken from the stages measured one at a time.
    stack.resume("events", "deliveries", "beat")
    since = time.time()
    batch = run.ingest("fast", PIPELINE_BATCH, args.seconds)
    ingested = time.time()
    stored = run.wait_processed(batch.result.acknowledged, since)
    pipeline = run.wait_delivered(run.delivery_ids(batch.result.acknowledged), since, timeout=120)
    print(
        f"pipeline: {len(batch.result.acknowledged)} events acknowledged in "
        f"{ingested - since:.1f} s, processed at {stored:.0f}/s, delivered at {pipeline:.0f}/s",
        flush=True,
    )
    samples["pipeline"] = [pipeline]
    e2e_rate = max(1.0, pipeline / 2)
    e2e_seconds = min(10.0, run.meetings["fast"].left / e2e_rate)
    e2e = run.ingest("fast", int(e2e_rate * e2e_seconds), e2e_seconds, rate=e2e_rate)
    message_ids = run.delivery_ids(e2e.result.acknowledged)
    run.wait_delivered(message_ids, time.time(), timeout=60)
    arrivals = run.arrivals()
    by_meeting = {a[0][2]: a[0][1] for a in arrivals.values() if a[0][0] == "fast"}
    samples["e2e"] = [
        (by_meeting[e2e.meetings[m]] - sent) * 1000
        for m, sent in e2e.sent_at.items()
        if e2e.meetings[m] in by_meeting
    ]
    samples["e2e_rate"] = [e2e_rate]
    print(
        f"end to end at {e2e_rate:.0f} events/s: {len(samples['e2e'])} callbacks timed", flush=True
    )
    return samples


def callback_body() -> str:
    """A callback body of the size the service sends (SPEC 6)."""
    return json.dumps(
        {"id": "evt_" + "x" * 22, "type": "meeting.start", "timestamp": "2026-11-24T10:00:03Z",
         "meetingId": 100000001, "customCallbackData": None,
         "data": {"meetingId": 100000001, "conferenceId": "100000001", "meetingName": None,
                  "startedAt": "2026-11-24T10:00:03Z", "endedAt": None, "durationSeconds": None,
                  "sequence": 1}}
    )  # fmt: skip


def check(run: Run) -> tuple[bool, list[str]]:
    """Every acknowledged event stored once and processed; every callback received, verified."""
    problems = []
    acknowledged = run.acknowledged
    if len(set(acknowledged)) != len(acknowledged):
        problems.append("a webhook-id was acknowledged twice")
    with run.engine.connect() as conn:
        stored = dict(
            conn.execute(
                sa.select(Event.source_event_id, sa.func.count())
                .where(Event.source_event_id.in_(acknowledged))
                .group_by(Event.source_event_id)
            ).all()
        )
        unprocessed = conn.scalar(sa.select(sa.func.count()).where(Event.processed_at.is_(None)))
        deliveries = conn.execute(sa.select(Delivery.message_id, Delivery.status)).all()
    missing = [m for m in acknowledged if m not in stored]
    twice = [m for m, n in stored.items() if n != 1]
    if missing:
        problems.append(f"{len(missing)} acknowledged events not stored")
    if twice:
        problems.append(f"{len(twice)} events stored more than once")
    if unprocessed:
        problems.append(f"{unprocessed} events never processed")
    if len(deliveries) != len(acknowledged):
        problems.append(f"{len(deliveries)} deliveries for {len(acknowledged)} events")
    record = run.sink_record()
    arrivals, bad = record["arrivals"], record["bad"]
    unsent = [m for m, status in deliveries if status != "succeeded" or m not in arrivals]
    if unsent:
        problems.append(f"{len(unsent)} callbacks not received (or not succeeded)")
    if bad:
        problems.append(f"{len(bad)} callbacks failed verification, e.g. {bad[0]}")
    if run.non_2xx:
        problems.append(f"{run.non_2xx} ingest answers were not 2xx: {run.refusals}")
    return not problems, problems


def figure(
    name: str, value: float, unit: str, baseline: float | None, goal: str | None
) -> dict[str, Any]:
    """One row of the table: ratio = value / baseline; `goal` is 'ratio >= x' or 'value < x'."""
    ratio = value / baseline if baseline else None
    met = None
    if goal is not None:
        subject, op, bound = goal.split()
        seen = ratio if subject == "ratio" else value
        met = seen is not None and (seen >= float(bound) if op == ">=" else seen < float(bound))
    return {
        "name": name, "value": round(value, 2), "unit": unit,
        "baseline": None if baseline is None else round(baseline, 2),
        "ratio": None if ratio is None else round(ratio, 3), "goal": goal, "met": met,
    }  # fmt: skip


def figures(
    samples: dict[str, list[float]], run: Run, rss: dict[str, float]
) -> list[dict[str, Any]]:
    ingest, bare, raw8, processed, raw2, delivered, raw_http, slow = (
        median(samples[k])
        for k in (
            "ingest",
            "bare",
            "psycopg8",
            "process",
            "psycopg2",
            "deliver",
            "requests",
            "slow",
        )
    )
    latency = samples["ingest_latency"]
    ideal = DELIVERY_CONCURRENCY / sink.SLOW_SECONDS
    rows = [
        figure("ingest_ratio", ingest, "req/s", bare, "ratio >= 0.5"),
        figure("ingest_psycopg_ratio", ingest, "req/s", raw8, "ratio >= 0.8"),
        figure("ingest_p50_ms", quantile(latency, 0.5), "ms", None, None),
        figure("ingest_p99_ms", quantile(latency, 0.99), "ms", None, "value < 50"),
        figure("process_ratio", processed, "events/s", raw2, "ratio >= 1.0"),
        figure("delivery_ratio", delivered, "callbacks/s", raw_http, "ratio >= 0.5"),
        figure("delivery_50ms_efficiency", slow, "callbacks/s", ideal, "ratio >= 0.8"),
        figure("pipeline_rate", median(samples["pipeline"]), "events/s",
               min(ingest, processed, delivered), None),
        figure("e2e_rate", median(samples["e2e_rate"]), "events/s", None, None),
        figure("e2e_p50_ms", quantile(samples["e2e"], 0.5), "ms", None, "value < 50"),
        figure("e2e_p99_ms", quantile(samples["e2e"], 0.99), "ms", None, "value < 250"),
        figure("receiver_rss_mb", rss["serve"], "MiB", rss["bare"], None),
        figure("worker_rss_mb", rss["events"] + rss["deliveries"], "MiB", None, None),
        figure("events_pool_rss_mb", rss["events"], "MiB", None, None),
        figure("deliveries_pool_rss_mb", rss["deliveries"], "MiB", None, None),
    ]  # fmt: skip
    rows[0]["met"] = bool(rows[0]["met"]) and run.non_2xx == 0  # "with no non-2xx answer"
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    def show(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "met" if value else "NOT MET"
        if isinstance(value, str):
            return value
        if isinstance(value, float) and abs(value) < 10:  # small: three significant digits
            return f"{value:.3g}"
        return f"{value:,.0f}" if isinstance(value, float) else str(value)

    head = ("figure", "value", "unit", "baseline", "ratio", "goal", "met")
    lines = [
        head,
        *[
            tuple(show(r[k]) for k in ("name", "value", "unit", "baseline", "ratio", "goal", "met"))
            for r in rows
        ],
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5, help="length of each load phase")
    args = parser.parse_args()
    started = time.monotonic()

    stack = harness.new_stack()
    print(f"bench: {stack.workdir}, database {stack.database_url.rsplit('/', 1)[1]}", flush=True)
    sink_process = None
    try:
        # The sink's URLs are known only once it runs; meetings are seeded for them up front.
        fast_count = args.rounds * INGEST_CAP + PIPELINE_BATCH + 6000 + 100
        slow_count = args.rounds * SLOW_BATCH
        sink_port = harness.free_port()  # chosen first: the seeded webhooks name it
        fast_url, slow_url = (f"http://127.0.0.1:{sink_port}/{p}" for p in ("fast", "slow"))
        user_secret, ids = harness.seed(
            stack.database_url, {fast_url: fast_count, slow_url: slow_count}
        )
        sink_process, _ = sink.start(user_secret, sink_port)
        stack.start()
        meetings = {"fast": Meetings(ids[fast_url]), "slow": Meetings(ids[slow_url])}
        run = Run(stack, sink_port, user_secret, meetings)
        samples = measure(run, args)
        stack.resume("events", "deliveries", "beat")
        run.wait_processed(run.acknowledged, time.time(), timeout=60)
        run.wait_delivered(run.delivery_ids(run.acknowledged), time.time(), timeout=60)
        rss = {name: harness.peak_rss_mb(stack.processes[name].pid) for name in ("serve", "bare")}
        rss.update({name: harness.peak_rss_mb(pid) for name, pid in stack.pools().items()})
        correct, problems = check(run)
        rows = figures(samples, run, rss)
    finally:
        stack.stop()
        if sink_process is not None:
            sink_process.terminate()
        harness.drop(stack)

    result = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, PostgreSQL + Redis",
        "correct": correct,
        "rounds": args.rounds,
        "seconds": round(time.monotonic() - started, 1),
        "figures": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(table(rows))
    print(f"\ncorrect: {correct}" + "".join(f"\n  - {p}" for p in problems))
    print(
        f"{args.rounds} rounds, medians, in {result['seconds']} s; "
        f"written to {RESULTS.relative_to(ROOT)}"
    )
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
