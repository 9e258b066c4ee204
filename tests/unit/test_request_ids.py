from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import structlog
from structlog.contextvars import clear_contextvars

from core import logs, task_names, wakeups
from core.config import Settings
from receiver.tasks import CeleryEnqueuer
from workers import celery_app, task_logs

ACCESS_TOKEN = "mhat_Q2lW7Xb1m0cYq3r5t7u9w1y3A5C7E9G1I3K5M7O9Q1S"
SIGNING_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    logs.configure("json", "INFO", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)
    structlog.reset_defaults()
    clear_contextvars()


def _parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class TestRequestIdFrom:
    @pytest.mark.parametrize("given", ["abc", "9f1c-44.x:y/z=+_", "a" * 128])
    def test_a_sane_id_is_kept(self, given: str) -> None:
        assert logs.request_id_from(given) == given

    @pytest.mark.parametrize(
        "given", [None, "", "a" * 129, "has space", 'quote"', "new\nline", "tab\t", "é"]
    )
    def test_anything_else_gets_a_new_id(self, given: str | None) -> None:
        made = logs.request_id_from(given)
        assert made != given
        assert logs.is_sane_request_id(made)
        assert logs.request_id_from(given) != made  # new each time


class TestLogFormats:
    def test_json_lines_carry_the_bound_request_id_and_stdlib_extras(
        self, json_lines: io.StringIO
    ) -> None:
        logs.bind_request_ids(["req-1"])
        logging.getLogger("some.library").warning("stdlib says %s", "hi", extra={"n": 3})
        logs.get_logger("ours").info("ours.event", answer=42)
        first, second = _parsed(json_lines)
        assert first["event"] == "stdlib says hi"
        assert (first["logger"], first["level"], first["n"]) == ("some.library", "warning", 3)
        assert (second["event"], second["answer"], second["logger"]) == ("ours.event", 42, "ours")
        assert first["request_id"] == second["request_id"] == "req-1"

    def test_secrets_are_redacted_in_messages_fields_and_tracebacks(
        self, json_lines: io.StringIO
    ) -> None:
        try:
            raise ValueError(f"bad token {ACCESS_TOKEN}")
        except ValueError:
            logging.getLogger("x").exception(
                "GET /presenter/sometoken", extra={"query": f"secret={SIGNING_SECRET}"}
            )
        text = json_lines.getvalue()
        assert ACCESS_TOKEN.removeprefix("mhat_") not in text
        assert SIGNING_SECRET.removeprefix("whsec_") not in text
        assert "sometoken" not in text
        (line,) = _parsed(json_lines)
        assert line["event"] == "GET /presenter/<redacted>"
        assert line["query"] == "secret=whsec_<redacted>"
        assert "bad token mhat_<redacted>" in line["exception"]

    def test_text_is_redacted_too(self) -> None:
        stream = io.StringIO()
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "see %s", (ACCESS_TOKEN,), None)
        stream.write(logs.formatter("text").format(record))
        assert "see mhat_<redacted>" in stream.getvalue()
        assert ACCESS_TOKEN not in stream.getvalue()

    def test_an_unknown_format_is_a_configuration_error(self) -> None:
        with pytest.raises(ValueError, match="text, json"):
            logs.parse_log_format("yaml")
        assert logs.parse_log_format(" JSON ") == "json"
        assert logs.parse_log_format(None) == "text"


class TestFoldTraced:
    def test_a_batch_lines_its_request_ids_up_with_its_events(self) -> None:
        traced = [
            ((task_names.PROCESS_EVENT, {"event_id": 1}), "r1"),
            ((task_names.DELIVER, {"delivery_id": 7}), "r2"),
            ((task_names.PROCESS_EVENT, {"event_id": 2}), None),
            ((task_names.PROCESS_EVENT, {"event_id": 3}), "r3"),
        ]
        assert wakeups.fold_traced(traced) == [
            ((task_names.PROCESS_EVENTS, {"event_ids": [1, 2, 3]}), ["r1", None, "r3"]),
            ((task_names.DELIVER, {"delivery_id": 7}), ["r2"]),
        ]


class TestReceiverCarriesRequestIds:
    def test_each_message_names_the_requests_that_caused_it(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        enqueuer = CeleryEnqueuer(settings)
        sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        first, release = threading.Event(), threading.Event()

        def send_task(name: str, kwargs: dict[str, Any], **options: Any) -> None:
            if not first.is_set():  # hold the sender so that the rest waits together
                first.set()
                assert release.wait(10)
            sent.append((name, kwargs, options))

        monkeypatch.setattr(enqueuer.celery, "send_task", send_task)

        def request(request_id: str | None, task: str, **kwargs: Any) -> None:
            clear_contextvars()
            if request_id:
                logs.bind_request_ids([request_id])
            enqueuer(task, kwargs)  # as the request's commit does, in the request's thread
            clear_contextvars()

        try:
            request("r0", task_names.DELIVER, delivery_id=1)
            assert first.wait(10)
            request("r1", task_names.PROCESS_EVENT, event_id=10)
            request("r2", task_names.PROCESS_EVENT, event_id=11)
            request(None, task_names.DELIVER, delivery_id=2)
            release.set()
            enqueuer.flush()
        finally:
            release.set()
            enqueuer.close()
        assert sent == [
            (task_names.DELIVER, {"delivery_id": 1}, {"headers": {"request_ids": ["r0"]}}),
            (
                task_names.PROCESS_EVENTS,
                {"event_ids": [10, 11]},
                {"headers": {"request_ids": ["r1", "r2"]}},
            ),
            (task_names.DELIVER, {"delivery_id": 2}, {}),
        ]


class TestWorkerBindsRequestIds:
    @staticmethod
    def _task(name: str, request_ids: object) -> Any:
        return SimpleNamespace(name=name, request=SimpleNamespace(request_ids=request_ids))

    def test_a_task_binds_the_ids_of_its_message_and_logs_each_batched_event(
        self, json_lines: io.StringIO
    ) -> None:
        task = self._task(task_names.PROCESS_EVENTS, ["r1", None, "r1", "r2"])
        task_logs.bind_task_context(task=task, task_id="t-1", kwargs={"event_ids": [1, 2, 3, 4]})
        assert logs.current_request_ids() == ["r1", "r2"]
        received = [
            (line["event_id"], line.get("request_id"), line["task_id"])
            for line in _parsed(json_lines)
        ]
        assert received == [(1, "r1", "t-1"), (2, None, "t-1"), (3, "r1", "t-1"), (4, "r2", "t-1")]
        task_logs.unbind_task_context()
        assert logs.current_request_ids() == []

    def test_one_request_binds_request_id_and_junk_is_dropped(
        self, json_lines: io.StringIO
    ) -> None:
        task = self._task(task_names.DELIVER, ["r1", "bad id", 7])
        task_logs.bind_task_context(task=task, task_id="t-2", kwargs={"delivery_id": 1})
        logs.get_logger("w").info("w.line")
        (line,) = _parsed(json_lines)
        assert line["request_id"] == "r1"
        assert "request_ids" not in line

    def test_the_work_a_task_causes_carries_its_request_ids(
        self, settings: Settings, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        celery = celery_app.make_celery(settings)
        sent: list[dict[str, Any]] = []
        monkeypatch.setattr(celery, "send_task", lambda *_a, **options: sent.append(options))
        logs.bind_request_ids(["r1", "r2"])
        try:
            celery_app.publish(task_names.DELIVER, {"delivery_id": 5})
        finally:
            clear_contextvars()
        celery_app.publish(task_names.DELIVER, {"delivery_id": 6})
        assert [options.get("headers") for options in sent] == [
            {"request_ids": ["r1", "r2"]},
            None,
        ]
