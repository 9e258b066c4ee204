from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, generate_latest
from sqlalchemy.orm import Session, sessionmaker

from core import metrics
from core.metrics_export import forget_dead_processes, registry_for
from core.models import AlertType, Meeting
from core.services import events
from core.services.outbound_http import Outcome
from tests.conftest import Account
from tests.unit.core.test_alerts import T0, add_rule, emit_at, new_meeting

ROOT = Path(__file__).resolve().parents[3]


def alerts_fired(rule_type: str) -> float:
    return REGISTRY.get_sample_value("meetinghooks_alerts_fired_total", {"type": rule_type}) or 0.0


class TestAlertsFired:
    def test_counted_once_committed_by_rule_kind(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 60})
        meeting_id = new_meeting(session_factory, account.id)
        before = alerts_fired("meeting.short")
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        emit_at(session_factory, meeting_id, "meeting.end", T0 + dt.timedelta(seconds=5))
        # A second end moves the end: the rule has fired for this meeting already.
        emit_at(session_factory, meeting_id, "meeting.end", T0 + dt.timedelta(seconds=9))
        assert alerts_fired("meeting.short") == before + 1

    def test_a_rolled_back_alert_is_not_counted(
        self, session_factory: sessionmaker[Session], account: Account
    ) -> None:
        add_rule(session_factory, account.id, AlertType.MEETING_SHORT, {"seconds": 60})
        meeting_id = new_meeting(session_factory, account.id)
        emit_at(session_factory, meeting_id, "meeting.start", T0)
        before = alerts_fired("meeting.short")
        with session_factory() as session:
            meeting = session.get(Meeting, meeting_id)
            assert meeting is not None
            end = T0 + dt.timedelta(seconds=5)
            events.emit_internal(session, meeting, "meeting.end", source="api", occurred_at=end)
            session.rollback()
        assert alerts_fired("meeting.short") == before
        # The same alert, committed this time, is counted once.
        emit_at(session_factory, meeting_id, "meeting.end", T0 + dt.timedelta(seconds=5))
        assert alerts_fired("meeting.short") == before + 1


class TestAttemptResult:
    @pytest.mark.parametrize(
        ("status", "error", "result"),
        [
            (204, None, "2xx"),
            (302, "redirect", "redirect"),
            (404, "http-404", "http-4xx"),
            (410, "http-410", "http-4xx"),
            (503, "http-503", "http-5xx"),
            (None, "timeout", "timeout"),
            (None, "connection-error", "connection-error"),
            (200, "timeout", "timeout"),  # a 2xx that came after the deadline
        ],
    )
    def test_a_status_class_never_the_raw_code(
        self, status: int | None, error: str | None, result: str
    ) -> None:
        outcome = Outcome(status_code=status, latency_ms=12, error=error)
        assert metrics.attempt_result(outcome) == result


BUSY_CHILD = """
import sys
from core.metrics import POOL_BUSY
POOL_BUSY.labels(pool="deliveries").inc()
print("busy", flush=True)
sys.stdin.readline()
"""


def busy(text: bytes) -> float:
    for line in text.decode().splitlines():
        if line.startswith('meetinghooks_worker_pool_busy{pool="deliveries"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


class TestSharedDirectory:
    def test_a_dead_processs_busy_slot_is_forgotten_its_counters_kept(self, tmp_path: Path) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PYTHONPATH": str(ROOT)}
        children = [
            subprocess.Popen(
                [sys.executable, "-c", BUSY_CHILD],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        try:
            for child in children:
                assert child.stdout is not None
                assert child.stdout.readline() == b"busy\n"
            counted = subprocess.run(
                [sys.executable, "-c",
                 "from core.metrics import DELIVERY_ATTEMPTS as A; A.labels(result='2xx').inc()"],
                env=env, check=True,
            )  # fmt: skip
            assert counted.returncode == 0
            assert busy(generate_latest(registry_for(str(tmp_path)))) == 2
            children[0].kill()  # killed mid-task: it never says it is idle
            children[0].wait()
            text = generate_latest(registry_for(str(tmp_path)))
            assert busy(text) == 1
            assert b'meetinghooks_delivery_attempts_total{result="2xx"} 1.0' in text
            assert forget_dead_processes(str(tmp_path)) == []  # already done by the scrape
        finally:
            for child in children:
                child.kill()
                child.communicate()  # reaps it and closes its pipes
