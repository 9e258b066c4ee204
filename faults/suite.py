"""`make faults`: break the deployed service in nine ways under load; prove nothing was lost.

Runs the service as production does (`meetinghooks serve`, `worker events`, `worker deliveries`
and `beat`, each its own process) on a PostgreSQL, a Redis and a RabbitMQ of the suite's own
(`faults.services`: the machine's shared servers are never touched), with a steady load of
signed platform events and callbacks to a local verifying receiver. One fault per scenario,
then the checker reads the database (`faults.checker`). Prints a table and the line

    faults: <N> scenarios, <L> lost, <D> duplicated, <M> callbacks missing

and exits 1 when any of those is not 0, when anything else the checker proves does not hold,
or when a scenario could not run. See faults/README.md.

    .venv/bin/python faults/suite.py [--only 1,4,6]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import free_port  # noqa: E402
from faults import deployment as deploy  # noqa: E402
from faults.checker import Checker, Verdict  # noqa: E402
from faults.load import Load  # noqa: E402
from faults.receiver import CallbackReceiver  # noqa: E402
from faults.services import Postgres, RabbitMQ, Redis  # noqa: E402

MEETINGS_PER_SECOND = 4.0  # two events each: 8 signed events a second
FAULT_AT = 5.0  # seconds of load before the fault
LOAD_AFTER = 8.0  # seconds of load after the fault is undone
DOWN_SECONDS = 3.0  # how long a restarted server stays down
RECEIVER_DOWN_SECONDS = 60.0
RECEIVER_500_SECONDS = 20.0
STARTED = time.monotonic()
ROLE_COMMANDS = {role: " ".join(["meetinghooks", *argv[1:]]) for role, argv in deploy.ROLES.items()}


def say(text: str) -> None:
    """Print a progress line, stamped with the seconds since the suite started."""
    print(f"[{time.monotonic() - STARTED:4.0f} s] {text}", flush=True)


@dataclass
class Run:
    """Everything a fault may act on: the private servers and the current deployment."""

    postgres: Postgres
    redis: Redis
    rabbitmq: RabbitMQ | None = None
    deployment: deploy.Deployment | None = None
    receiver: CallbackReceiver | None = None
    checker: Checker | None = None
    kept: list[Path] = field(default_factory=list)  # deployment directories (logs)

    @property
    def dep(self) -> deploy.Deployment:
        assert self.deployment is not None  # noqa: S101  (set before any scenario runs)
        return self.deployment

    @property
    def callbacks(self) -> CallbackReceiver:
        assert self.receiver is not None  # noqa: S101  (set before any scenario runs)
        return self.receiver

    @property
    def check(self) -> Checker:
        assert self.checker is not None  # noqa: S101  (set before any scenario runs)
        return self.checker


@dataclass
class Fault:
    """What a fault did: when it was undone (epoch s), and what it saw on the way."""

    ended: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Scenario:
    """One fault, the deployment it runs on, and how long it lasts."""

    key: str
    title: str
    broker: str  # the deployment it runs on: "redis" or "rabbitmq"
    inject: Callable[[Run, list[int]], Fault]
    seconds: float  # how long the fault lasts, to size the load
    receiver_delay: float = 0.0  # seconds the callback receiver takes per answer


def kill_events_worker(run: Run, meetings: list[int]) -> Fault:
    """Kill -9 the events pool's whole process tree, then start it again at once."""
    fault = Fault()
    waiting = _await_unprocessed(run, meetings)
    pids = run.dep.kill9("events")
    since = run.dep.log_size("events")
    run.dep.spawn("events")
    fault.ended = time.time()
    run.dep.wait_ready("events", since)
    fault.notes.append(
        f"killed -9 pids {pids} (supervisor, celery worker, pool processes);"
        f" {waiting} stored events were waiting for it"
    )
    return fault


def _await_unprocessed(run: Run, meetings: list[int]) -> int:
    """Wait (at most 5 s) until a stored event waits for the events pool; return how many do."""
    deadline = time.monotonic() + 5
    waiting = run.check.unprocessed(meetings)
    while waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
        waiting = run.check.unprocessed(meetings)
    return waiting


def _await_in_flight(run: Run, meetings: list[int], at_least: int = 3) -> int:
    """Wait (at most 10 s) until callback attempts are under way; return how many are."""
    deadline = time.monotonic() + 10
    in_flight = run.check.in_flight(meetings)
    while in_flight < at_least and time.monotonic() < deadline:
        time.sleep(0.1)
        in_flight = run.check.in_flight(meetings)
    return in_flight


def kill_delivery_worker(run: Run, meetings: list[int]) -> Fault:
    """Kill -9 the deliveries pool while attempts are leased, then start it again."""
    fault = Fault()
    in_flight = _await_in_flight(run, meetings)
    pids = run.dep.kill9("deliveries")
    time.sleep(1)
    since = run.dep.log_size("deliveries")
    run.dep.spawn("deliveries")
    fault.ended = time.time()
    run.dep.wait_ready("deliveries", since)
    fault.notes.append(f"killed -9 pids {pids} with {in_flight} attempts in flight (leased)")
    if in_flight == 0:
        fault.notes.append("PROBLEM: no attempt was in flight at the kill")
    return fault


def kill_serve(run: Run, meetings: list[int]) -> Fault:
    """Kill -9 `meetinghooks serve` (gunicorn and its workers), then start it again."""
    fault = Fault()
    pids = run.dep.kill9("serve")
    run.dep.spawn("serve")
    fault.ended = time.time()
    run.dep.wait_ready("serve", 0)
    fault.notes.append(f"killed -9 pids {pids} (gunicorn master and workers)")
    return fault


def kill_callback_receiver(run: Run, meetings: list[int]) -> Fault:
    """Kill -9 the callback receiver while it answers slowly, and start it a second later."""
    fault = Fault()
    in_flight = run.check.in_flight(meetings)
    pid = run.callbacks.kill()
    time.sleep(1)
    run.callbacks.start()
    fault.ended = time.time()
    fault.notes.append(f"killed -9 pid {pid} with {in_flight} attempts in flight")
    return fault


def restart_redis(run: Run, meetings: list[int]) -> Fault:
    """Stop Redis (every queued message is gone with it) and start it again."""
    import redis  # noqa: PLC0415  (celery[redis] brings it)

    fault = Fault()
    in_flight = _await_in_flight(run, meetings)  # both pools busy when the broker goes
    waiting = _await_unprocessed(run, meetings)
    client = redis.Redis(port=run.redis.port, socket_timeout=5)
    # redis-py types its answers as "maybe awaitable"; this client is the blocking one.
    queued = int(client.llen("events")) + int(client.llen("deliveries"))  # type: ignore[arg-type]
    unacked = int(client.hlen("unacked"))  # type: ignore[arg-type]
    client.close()
    run.redis.stop()
    time.sleep(DOWN_SECONDS)
    run.redis.start()
    fault.ended = time.time()
    fault.notes.append(
        f"stopped with {in_flight} attempts in flight and {waiting} events waiting; {queued}"
        f" messages queued and {unacked} unacknowledged, all lost (no persistence);"
        f" down {DOWN_SECONDS:.0f} s"
    )
    return fault


def restart_rabbitmq(run: Run, meetings: list[int]) -> Fault:
    """Stop the RabbitMQ node and start it again."""
    assert run.rabbitmq is not None  # noqa: S101  (its deployment exists only with it)
    fault = Fault()
    in_flight = _await_in_flight(run, meetings)  # both pools busy when the broker goes
    waiting = _await_unprocessed(run, meetings)
    queued = _work_queues(run.rabbitmq.queued())
    began = time.monotonic()
    run.rabbitmq.stop()
    time.sleep(DOWN_SECONDS)
    run.rabbitmq.start()
    fault.ended = time.time()
    fault.notes.append(
        f"node stopped with {in_flight} attempts in flight and {waiting} events waiting,"
        " and started again:"
        f" down {time.monotonic() - began:.1f} s;"
        f" messages queued at the stop: {queued};"
        f" after the start: {_work_queues(run.rabbitmq.queued())}"
    )
    return fault


def _work_queues(queued: dict[str, int]) -> dict[str, int]:
    """Keep the two work queues (not Celery's own pidbox and event queues)."""
    return {name: count for name, count in queued.items() if name in ("events", "deliveries")}


def restart_postgres(run: Run, meetings: list[int]) -> Fault:
    """Stop PostgreSQL as a crash would (immediate) and start it again."""
    fault = Fault()
    began = time.monotonic()
    run.postgres.stop("immediate")
    time.sleep(DOWN_SECONDS)
    run.postgres.start()
    fault.ended = time.time()
    fault.notes.append(
        f"pg_ctl stop -m immediate (every backend killed, crash recovery at start):"
        f" down {time.monotonic() - began:.1f} s"
    )
    return fault


def receiver_down(run: Run, meetings: list[int]) -> Fault:
    """Take the callback receiver away for a minute."""
    fault = Fault()
    run.callbacks.kill()
    time.sleep(RECEIVER_DOWN_SECONDS)
    run.callbacks.start()
    fault.ended = time.time()
    fault.notes.append(f"nothing listening on the callback port for {RECEIVER_DOWN_SECONDS:.0f} s")
    return fault


def receiver_500(run: Run, meetings: list[int]) -> Fault:
    """Make the callback receiver answer 500 for a while."""
    fault = Fault()
    run.callbacks.control(status=500)
    time.sleep(RECEIVER_500_SECONDS)
    run.callbacks.control(status=204)
    fault.ended = time.time()
    fault.notes.append(f"every callback answered 500 for {RECEIVER_500_SECONDS:.0f} s")
    return fault


SCENARIOS = (
    Scenario("1", "kill -9 an events worker", "redis", kill_events_worker, 0),
    Scenario("2", "kill -9 the delivery worker mid-attempt", "redis", kill_delivery_worker, 1,
             receiver_delay=1.0),
    Scenario("3", "kill -9 the receiver (serve)", "redis", kill_serve, 0),
    Scenario("3b", "kill -9 the callback receiver", "redis", kill_callback_receiver, 1,
             receiver_delay=0.5),
    Scenario("4", "restart Redis (broker)", "redis", restart_redis, DOWN_SECONDS,
             receiver_delay=1.0),
    Scenario("5", "restart RabbitMQ (broker)", "rabbitmq", restart_rabbitmq, DOWN_SECONDS + 8,
             receiver_delay=1.0),
    Scenario("6", "restart PostgreSQL", "redis", restart_postgres, DOWN_SECONDS + 1),
    Scenario("7", "callback receiver down 60 s", "redis", receiver_down, RECEIVER_DOWN_SECONDS),
    Scenario("8", "callback receiver answers 500", "redis", receiver_500, RECEIVER_500_SECONDS),
)  # fmt: skip


@dataclass
class Row:
    """One line of the table: a verdict, or why the scenario could not run."""

    scenario: Scenario
    verdict: Verdict | None = None
    error: str | None = None


def run_scenario(run: Run, scenario: Scenario) -> Row:
    """Load, fault, settle, check."""
    dep, receiver, checker = run.dep, run.callbacks, run.check
    receiver.control(status=204, delay=scenario.receiver_delay)
    count = int((FAULT_AT + scenario.seconds + LOAD_AFTER) * MEETINGS_PER_SECOND)
    meetings = dep.create_meetings(count, receiver.url)
    load = Load(dep.base_url, dep.stack.ingest_secret, meetings, MEETINGS_PER_SECOND)
    say(f"{scenario.key}. {scenario.title}: {count} meetings, {2 * count} events")
    began = time.monotonic()
    load.start()
    try:
        time.sleep(FAULT_AT)
        fault = scenario.inject(run, meetings)
        load.join()
    finally:
        load.stop()
    waited = checker.wait_settled(meetings, load.acknowledged)
    broker_state = _broker_state(run)
    receiver.control(delay=0.0)
    verdict = checker.verdict(meetings, load.events, receiver.arrivals(), fault.ended)
    verdict.notes[:0] = fault.notes
    answers = ", ".join(f"{status} x{n}" for status, n in sorted(load.statuses.items()))
    verdict.notes.append(f"ingest answers: {answers}")
    verdict.notes.append(
        f"load {time.monotonic() - began - waited:.0f} s, then settled in {waited:.1f} s"
    )
    verdict.problems += [
        note.removeprefix("PROBLEM: ") for note in fault.notes if "PROBLEM" in note
    ]
    if verdict.problems:
        verdict.notes.append(f"the broker when the suite stopped waiting: {broker_state}")
    # A role that ended by itself stays down for the rest of its scenario (that is the
    # finding); it is started again for the next one, as a process manager would.
    for role, code in dep.exited().items():
        verdict.problems.append(
            f"`{ROLE_COMMANDS[role]}` exited by itself (status {code}) and stayed down;"
            f" its last error: {dep.last_error(role)}"
        )
        dep.start(role)
    return Row(scenario, verdict)


def _broker_state(run: Run) -> str:
    """Describe the work queues and their consumers, to explain work that did not move."""
    try:
        if run.rabbitmq is not None:
            queues = run.rabbitmq.table(
                "list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"
            )
            channels = run.rabbitmq.table(
                "list_channels", "name", "consumer_count", "messages_unacknowledged",
                "prefetch_count",
            )  # fmt: skip
            work = [q for q in queues if q.split("\t")[0] in ("events", "deliveries")]
            return (
                f"queues (name, ready, unacked, consumers): {work};"
                f" channels (name, consumers, unacked, prefetch): {channels}"
            )
        import redis  # noqa: PLC0415  (celery[redis] brings it)

        client = redis.Redis(port=run.redis.port, socket_timeout=5)
        state = {key: client.llen(key) for key in ("events", "deliveries")}
        state["unacked"] = client.hlen("unacked")
        client.close()
        return f"Redis: {state}"
    except Exception as exc:  # noqa: BLE001  (a diagnosis must not end the scenario)
        return f"unknown ({type(exc).__name__}: {exc})"


@contextlib.contextmanager
def deployment_on(run: Run, name: str, database_url: str, broker_url: str) -> Iterator[None]:
    """Start a deployment and its callback receiver; stop both however the block ends."""
    say(f"starting the {name} deployment")
    dep = deploy.new_deployment(name, database_url, broker_url)
    run.kept.append(dep.stack.workdir)
    receiver: CallbackReceiver | None = None
    engine = sa.create_engine(database_url, pool_pre_ping=True)
    try:
        dep.create_user()
        dep.start_all()
        records = dep.stack.workdir
        receiver = CallbackReceiver(
            free_port(), dep.signing_secret, records / "callbacks.jsonl", records / "callbacks.log"
        )
        receiver.start()
        say(f"the {name} deployment is up: {dep.stack.workdir}")
        run.deployment, run.receiver = dep, receiver
        run.checker = Checker(
            engine,
            sweep_seconds=deploy.SWEEP_INTERVAL_SECONDS,
            inbox_after_seconds=deploy.INBOX_SWEEP_AFTER_SECONDS,
        )
        yield
    finally:
        say(f"stopping the {name} deployment")
        dep.stop()
        if receiver is not None:
            receiver.close()
        engine.dispose()
        run.deployment = run.receiver = run.checker = None


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def print_table(rows: list[Row]) -> None:
    header = ("fault", "sent", "acked", "stored", "lost", "dup", "callbacks", "delivered",
              "failed", "missing", "stuck", "recover")  # fmt: skip
    lines: list[tuple[str, ...]] = []
    for row in rows:
        name = f"{row.scenario.key}. {row.scenario.title}"
        v = row.verdict
        if v is None:
            lines.append((name, *(["-"] * 11)))
            continue
        lines.append((
            name, str(v.sent), str(v.acknowledged), str(v.stored), str(v.lost), str(v.duplicates),
            str(v.callbacks), str(v.delivered), str(v.failed), str(v.missing), str(v.stuck),
            _seconds(v.recover_seconds),
        ))  # fmt: skip
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
            for i, cell in enumerate(line)
        )

    print()
    print(fmt(header))
    print("  ".join("-" * width for width in widths))
    for line in lines:
        print(fmt(line))
    print()
    for row in rows:
        print(f"{row.scenario.key}. {row.scenario.title}")
        if row.error:
            print(f"   COULD NOT RUN: {row.error}")
        if row.verdict:
            for note in row.verdict.notes:
                print(f"   {note}")
            for problem in row.verdict.problems:
                print(f"   PROBLEM: {problem}")


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_on(run: Run, broker: str, todo: list[Scenario], budget_end: float) -> list[Row]:
    """Run scenarios on one deployment (Redis or RabbitMQ as the broker), in turn."""
    rows: list[Row] = []
    try:
        if broker == "rabbitmq":
            run.rabbitmq = RabbitMQ(run.postgres.dir.parent)
            run.rabbitmq.init()
            broker_url = run.rabbitmq.url
        else:
            broker_url = run.redis.url
        database = run.postgres.create_database(f"meetinghooks_{broker}")
        with deployment_on(run, broker, database, broker_url):
            for scenario in todo:
                if time.monotonic() > budget_end:
                    rows.append(Row(scenario, error="the suite's time budget is spent"))
                    continue
                try:
                    rows.append(run_scenario(run, scenario))
                except Exception as exc:  # noqa: BLE001  (reported as a row; the rest run)
                    traceback.print_exc()
                    rows.append(Row(scenario, error=f"{type(exc).__name__}: {exc}"))
                    _revive(run)
    except Exception as exc:  # noqa: BLE001  (its scenarios could not run: say so)
        traceback.print_exc()
        done = {row.scenario.key for row in rows}
        rows += [Row(s, error=f"{type(exc).__name__}: {exc}") for s in todo if s.key not in done]
    finally:
        if run.rabbitmq is not None:
            run.rabbitmq.close()
            run.rabbitmq = None
    return rows


def summarize(rows: list[Row], run: Run, seconds: float) -> int:
    """Print the table and the final line; return the exit status."""
    rows.sort(key=lambda row: [s.key for s in SCENARIOS].index(row.scenario.key))
    print_table(rows)
    verdicts = [row.verdict for row in rows if row.verdict is not None]
    lost = sum(v.lost for v in verdicts)
    duplicated = sum(v.duplicates for v in verdicts)
    missing = sum(v.missing for v in verdicts)
    ok = not (
        lost
        or duplicated
        or missing
        or len(verdicts) < len(rows)  # a scenario could not run
        or any(v.problems for v in verdicts)
    )
    print(f"\nran {seconds:.0f} s in all")
    if ok:
        for path in run.kept:
            shutil.rmtree(path, ignore_errors=True)
    else:
        print("the processes' logs are kept in: " + ", ".join(map(str, run.kept)))
    print(
        f"faults: {len(rows)} scenarios, {lost} lost, {duplicated} duplicated,"
        f" {missing} callbacks missing"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--only", help="comma-separated scenario keys, e.g. 1,4,6")
    parser.add_argument(
        "--budget", type=float, default=540, help="seconds; no scenario starts after this"
    )
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s.key in args.only.split(",")]
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # clean up on each
        signal.signal(signum, _terminate)
    began = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="mh-faults-servers-"))
    root.chmod(0o755)  # the postgres user must reach its directory when we run as root
    rows: list[Row] = []
    run = Run(Postgres(root), Redis(root))
    try:
        run.postgres.init()
        run.redis.start()
        for broker in ("redis", "rabbitmq"):
            todo = [s for s in chosen if s.broker == broker]
            if todo:
                rows += run_on(run, broker, todo, began + args.budget)
    except KeyboardInterrupt:
        print("faults: interrupted; everything it started is stopped and removed", file=sys.stderr)
        for path in run.kept:
            shutil.rmtree(path, ignore_errors=True)
        return 130
    finally:
        run.redis.close()
        run.postgres.close()
        shutil.rmtree(root, ignore_errors=True)
    return summarize(rows, run, time.monotonic() - began)


def _revive(run: Run) -> None:
    """After a scenario broke off mid-fault, bring back whatever it left down."""
    with contextlib.suppress(Exception):
        if not run.postgres.running():
            run.postgres.start()
    with contextlib.suppress(Exception):
        if not run.redis.answers():
            run.redis.start()
    with contextlib.suppress(Exception):
        if run.receiver is not None and run.receiver.process is None:
            run.receiver.start()
    if run.deployment is not None:
        for role, process in run.deployment.stack.processes.items():
            if process.poll() is not None:
                with contextlib.suppress(Exception):
                    run.deployment.start(role)


if __name__ == "__main__":
    sys.exit(main())
