"""What the simulator expected, what arrived, and the summary it prints."""

from __future__ import annotations

import math
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from meetinghooks.simulate.receiver import Arrival, Tally

# Request kinds, in the order the summary lists them.
KINDS = (
    "create meeting",
    "presenter start",
    "api end",
    "ingest start",
    "ingest end",
    "ingest duplicate",
)


@dataclass(frozen=True)
class Expected:
    """A callback the service owes us: one type of one meeting, with its final values if known.

    `final` holds the `data` fields the last callback of the type must carry (the times the
    simulated platform reported); None when the service chose them (presenter link, API end).
    """

    meeting_id: int
    type: str
    sent_at: float  # time.monotonic() just before the request that caused it
    final: dict[str, Any] | None = None

    def met_by(self, arrivals: Sequence[Arrival]) -> bool:
        """Whether the newest of these callbacks (by sequence) carries the final values."""
        if not arrivals:
            return False
        if self.final is None:
            return True
        newest = max(arrivals, key=lambda a: (a.sequence, a.at))
        return all(newest.data.get(name) == value for name, value in self.final.items())


@dataclass
class Ledger:
    """Requests sent and callbacks expected; the driver's threads write, guarded by a lock."""

    sent: Counter[str] = field(default_factory=Counter)
    acknowledged: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)  # "kind: status code-or-error"
    retried: int = 0  # 429/503 answers waited out and sent again
    duplicates_stored: int = 0  # a repeated webhook-id answered 202 instead of 200
    expected: dict[tuple[int, str], Expected] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def expect(self, item: Expected) -> None:
        with self.lock:
            self.expected[(item.meeting_id, item.type)] = item

    def outstanding(self, arrivals: Iterable[Arrival]) -> list[Expected]:
        """The expected callbacks not (or not yet finally) received."""
        by_key = _by_key(arrivals)
        with self.lock:
            items = list(self.expected.values())
        return [e for e in items if not e.met_by(by_key.get((e.meeting_id, e.type), []))]


def _by_key(arrivals: Iterable[Arrival]) -> dict[tuple[int, str], list[Arrival]]:
    found: dict[tuple[int, str], list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        found[(arrival.meeting_id, arrival.type)].append(arrival)
    return found


def percentile(values: Sequence[float], q: float) -> float | None:
    """Return the nearest-rank `q` percentile (0 < q <= 100), or None without values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True)
class Summary:
    """Everything the final table shows; `problems` empty means a clean run."""

    meetings: int
    seconds: float
    sent: dict[str, int]
    acknowledged: dict[str, int]
    failed: dict[str, int]
    retried: int
    duplicates_stored: int
    callbacks_expected: int
    callbacks_verified: int
    callbacks_received: int
    redelivered: int
    rejected: dict[str, int]
    unexpected: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    missing: list[str]
    aborted: str | None = None

    @property
    def problems(self) -> list[str]:
        found = [f"{len(self.missing)} callbacks missing"] if self.missing else []
        if self.failed:
            found.append(f"{sum(self.failed.values())} requests not acknowledged")
        if self.duplicates_stored:
            found.append(f"{self.duplicates_stored} duplicates stored again")
        if self.rejected:
            found.append(f"{sum(self.rejected.values())} callbacks rejected")
        if self.unexpected:
            found.append(f"{self.unexpected} callbacks for meetings we did not start")
        if self.aborted:
            found.append(self.aborted)
        return found

    def to_json(self) -> dict[str, Any]:
        """Return the summary as one JSON object (`--json`)."""
        return {
            "meetings": self.meetings,
            "seconds": round(self.seconds, 1),
            "requests": {
                "sent": sum(self.sent.values()),
                "acknowledged": sum(self.acknowledged.values()),
                "byKind": {
                    kind: {
                        "sent": self.sent.get(kind, 0),
                        "acknowledged": self.acknowledged.get(kind, 0),
                    }
                    for kind in KINDS
                    if self.sent.get(kind)
                },
                "failed": self.failed,
                "retried": self.retried,
                "duplicatesStored": self.duplicates_stored,
            },
            "callbacks": {
                "expected": self.callbacks_expected,
                "verified": self.callbacks_verified,
                "received": self.callbacks_received,
                "redelivered": self.redelivered,
                "rejected": self.rejected,
                "unexpected": self.unexpected,
                "latencyP50Ms": self.latency_p50_ms,
                "latencyP99Ms": self.latency_p99_ms,
                "missing": self.missing,
            },
            "aborted": self.aborted,
            "ok": not self.problems,
        }


def summarize(
    ledger: Ledger,
    tally: Tally,
    *,
    meetings: int,
    seconds: float,
    aborted: str | None = None,
) -> Summary:
    """Join what was expected with what arrived."""
    arrivals = tally.snapshot()
    by_key = _by_key(arrivals)
    with ledger.lock:
        expected = [ledger.expected[key] for key in sorted(ledger.expected)]
        sent, acknowledged, failed = (
            dict(ledger.sent),
            dict(ledger.acknowledged),
            dict(ledger.failed),
        )
        retried, duplicates_stored = ledger.retried, ledger.duplicates_stored
    ours = {item.meeting_id for item in expected}
    latencies = [
        (min(a.at for a in by_key[(e.meeting_id, e.type)]) - e.sent_at) * 1000
        for e in expected
        if by_key.get((e.meeting_id, e.type))
    ]
    missing = [
        f"meeting {e.meeting_id} {e.type}"
        + (" (final values never arrived)" if by_key.get((e.meeting_id, e.type)) else "")
        for e in expected
        if not e.met_by(by_key.get((e.meeting_id, e.type), []))
    ]
    with tally.lock:
        rejected, redelivered = dict(tally.rejected), tally.redelivered
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Summary(
        meetings=meetings,
        seconds=seconds,
        sent=sent,
        acknowledged=acknowledged,
        failed=failed,
        retried=retried,
        duplicates_stored=duplicates_stored,
        callbacks_expected=len(expected),
        callbacks_verified=len(expected) - len(missing),
        callbacks_received=len(arrivals),
        redelivered=redelivered,
        rejected=rejected,
        unexpected=sum(1 for a in arrivals if a.meeting_id not in ours),
        latency_p50_ms=None if p50 is None else round(p50),
        latency_p99_ms=None if p99 is None else round(p99),
        missing=missing,
        aborted=aborted,
    )


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def render(summary: Summary, console: Console) -> None:
    """Print the requests table, the callbacks table and one verdict line."""
    requests = Table(title=f"{summary.meetings} meetings in {summary.seconds:.1f} s")
    for name in ("request", "sent", "acknowledged"):
        requests.add_column(name, justify="left" if name == "request" else "right")
    for kind in KINDS:
        if summary.sent.get(kind):
            requests.add_row(kind, str(summary.sent[kind]), str(summary.acknowledged.get(kind, 0)))
    requests.add_row(
        "total",
        str(sum(summary.sent.values())),
        str(sum(summary.acknowledged.values())),
        style="bold",
    )
    console.print(requests)

    callbacks = Table(title="callbacks")
    callbacks.add_column("what")
    callbacks.add_column("count", justify="right")
    rows = [
        ("expected", str(summary.callbacks_expected)),
        ("verified (final values)", str(summary.callbacks_verified)),
        ("received in all", str(summary.callbacks_received)),
        ("redelivered (same webhook-id)", str(summary.redelivered)),
        ("bad signature or shape", str(sum(summary.rejected.values()))),
        ("ingest-to-callback p50", _ms(summary.latency_p50_ms)),
        ("ingest-to-callback p99", _ms(summary.latency_p99_ms)),
        ("missing", str(len(summary.missing))),
    ]
    for what, count in rows:
        callbacks.add_row(
            what, count, style="bold red" if what == "missing" and count != "0" else None
        )
    console.print(callbacks)

    for what in summary.missing[:10]:
        console.print(f"missing: {what}")
    if len(summary.missing) > 10:
        console.print(f"... and {len(summary.missing) - 10} more")
    for failure, times in sorted(summary.failed.items()):
        console.print(f"not acknowledged: {failure} x{times}")
    if summary.problems:
        console.print("[bold red]FAILED[/]: " + "; ".join(summary.problems))
    else:
        console.print(
            f"[bold green]OK[/]: {summary.callbacks_verified} of {summary.callbacks_expected} "
            "callbacks verified, nothing missing"
        )
