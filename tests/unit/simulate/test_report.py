from __future__ import annotations

from rich.console import Console

from meetinghooks.simulate.receiver import Arrival, Tally
from meetinghooks.simulate.report import Expected, Ledger, percentile, render, summarize

END_FINAL = {
    "startedAt": "2026-12-05T03:00:00Z",
    "endedAt": "2026-12-05T03:01:00Z",
    "durationSeconds": 60,
}


def arrival(meeting_id: int, type_: str, sequence: int, at: float, **data: object) -> Arrival:
    return Arrival(
        at=at,
        webhook_id=f"msg_{meeting_id}_{sequence}",
        type=type_,
        meeting_id=meeting_id,
        sequence=sequence,
        data={"sequence": sequence, **data},
    )


class TestExpected:
    def test_the_newest_callback_must_carry_the_final_values(self) -> None:
        expected = Expected(1, "meeting.end", sent_at=0.0, final=END_FINAL)
        early = arrival(1, "meeting.end", 1, 1.0, startedAt=None, endedAt="2026-12-05T03:01:00Z")
        corrected = arrival(1, "meeting.end", 3, 2.0, **END_FINAL)
        assert not expected.met_by([early])
        assert expected.met_by([early, corrected])
        # Arrival order does not matter, the sequence does.
        assert not expected.met_by([arrival(1, "meeting.end", 4, 0.5, startedAt=None), corrected])

    def test_without_final_values_any_callback_will_do(self) -> None:
        assert Expected(1, "meeting.start", sent_at=0.0).met_by(
            [arrival(1, "meeting.start", 1, 1.0)]
        )
        assert not Expected(1, "meeting.start", sent_at=0.0).met_by([])


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0


class TestSummary:
    def ledger(self) -> Ledger:
        ledger = Ledger()
        ledger.sent.update({"create meeting": 2, "ingest start": 2})
        ledger.acknowledged.update({"create meeting": 2, "ingest start": 2})
        ledger.expect(Expected(1, "meeting.start", sent_at=10.0, final={"startedAt": "a"}))
        ledger.expect(Expected(2, "meeting.start", sent_at=10.0, final={"startedAt": "b"}))
        return ledger

    def test_a_clean_run(self) -> None:
        tally = Tally(arrivals=[arrival(1, "meeting.start", 1, 10.1, startedAt="a"),
                                arrival(2, "meeting.start", 1, 10.3, startedAt="b")])  # fmt: skip
        summary = summarize(self.ledger(), tally, meetings=2, seconds=1.0)
        assert summary.problems == []
        assert (summary.callbacks_expected, summary.callbacks_verified) == (2, 2)
        assert summary.latency_p50_ms == 100
        assert summary.latency_p99_ms == 300
        assert summary.to_json()["ok"] is True

    def test_missing_and_unexpected_callbacks_are_problems(self) -> None:
        tally = Tally(arrivals=[arrival(1, "meeting.start", 1, 10.1, startedAt="wrong"),
                                arrival(99, "meeting.start", 1, 10.1)])  # fmt: skip
        summary = summarize(self.ledger(), tally, meetings=2, seconds=1.0)
        assert summary.missing == [
            "meeting 1 meeting.start (final values never arrived)",
            "meeting 2 meeting.start",
        ]
        assert summary.unexpected == 1
        assert summary.problems == [
            "2 callbacks missing",
            "1 callbacks for meetings we did not start",
        ]

    def test_unacknowledged_requests_and_stored_duplicates_are_problems(self) -> None:
        ledger = self.ledger()
        ledger.failed["ingest end: 401 invalid-signature"] = 3
        ledger.duplicates_stored = 1
        tally = Tally(arrivals=[arrival(1, "meeting.start", 1, 10.1, startedAt="a"),
                                arrival(2, "meeting.start", 1, 10.3, startedAt="b")])  # fmt: skip
        summary = summarize(ledger, tally, meetings=2, seconds=1.0)
        assert summary.problems == ["3 requests not acknowledged", "1 duplicates stored again"]

    def test_the_table_names_what_is_missing(self) -> None:
        summary = summarize(self.ledger(), Tally(), meetings=2, seconds=1.0)
        console = Console(record=True, width=100)
        render(summary, console)
        text = console.export_text()
        assert "missing: meeting 2 meeting.start" in text
        assert "FAILED: 2 callbacks missing" in text
        assert "2 meetings in 1.0 s" in text
