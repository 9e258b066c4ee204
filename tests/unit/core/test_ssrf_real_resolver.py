"""The SSRF guard with names answered by the machine's own resolver: nothing here fakes a lookup.

`localhost` and the numeric spellings of loopback are answered by glibc as on any machine.
A name with both a public and a private answer needs a hosts file of our own: the test
writes one, and runs the checks in a sandbox of their own (`unshare`: a private mount
namespace in which that file is bind-mounted over /etc/hosts, and a network namespace whose
only interface is a loopback that also carries the "public" address). glibc resolves there
exactly as it does everywhere; the machine's /etc/hosts is never touched, and no packet can
leave the sandbox whatever the guard does.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from core import ssrf
from core.config import EMBEDDED_ALLOWED_NETWORKS
from core.services import outbound_http
from tests.callback_receiver import CallbackReceiver

if TYPE_CHECKING:
    from flask.testing import FlaskClient

    from tests.conftest import Account

ROOT = Path(__file__).resolve().parents[3]
REQUIRE_SERVICES = os.environ.get("MEETINGHOOKS_REQUIRE_SERVICES") == "1"
PRODUCTION: tuple[ssrf.IPNetwork, ...] = ()  # no allow-list outside the embedded mode
EMBEDDED = tuple(ipaddress.ip_network(cidr) for cidr in EMBEDDED_ALLOWED_NETWORKS.split(","))


@dataclass(frozen=True)
class Message:
    """The least `outbound_http.send` needs: one signed callback."""

    callback_url: str
    delivery_id: int = 1
    message_id: str = "msg_real_resolver"
    body: str = '{"type": "meeting.start"}'
    secrets: tuple[str, ...] = ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",)


def deliver(url: str, allowed: tuple[ssrf.IPNetwork, ...]) -> outbound_http.Outcome:
    """Send one callback the way a delivery worker does, with `allowed` as the allow-list."""
    return outbound_http.send(
        outbound_http.make_http_session(allowed), Message(callback_url=url), timeout=5
    )


def start_meeting(client: FlaskClient, account: Account, url: str) -> dict[str, Any]:
    response = client.post(
        "/v1/meetings/start",
        json={"startWithPersonalUrl": False, "webhooks": {"meeting.end": {"callbackUrl": url}}},
        headers=account.headers,
    )
    assert response.status_code == 201
    status: dict[str, Any] = response.get_json()["webhooksStatus"]["meeting.end"]
    return status


# --- localhost and the numeric forms of loopback, as every machine's resolver answers them ---

# Full-width letters: Python's IDNA codec folds them to "localhost" before the lookup.
LOCALHOST_NAMES = [
    "localhost",
    "LocalHost",
    "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",
]
# getaddrinfo() reads each of these as 127.0.0.1 (inet_aton's legacy forms) or as an IPv6
# address carrying it.
LEGACY_LOOPBACK = ["127.1", "0x7f.1", "2130706433", "0177.0.0.1", "0x7f000001"]
LOOPBACK_LITERALS = ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[::]"]


class TestLocalhostInProduction:
    def test_the_resolver_answers_localhost_with_loopback_only(self) -> None:
        # The premise of this class: no fake stands between us and this answer.
        answers = ssrf.resolve("localhost", 80)
        assert answers
        assert all(address.is_loopback for address in answers), answers

    @pytest.mark.parametrize("name", LOCALHOST_NAMES)
    def test_a_localhost_callback_is_not_registered_through_the_api(
        self, client: FlaskClient, account: Account, name: str
    ) -> None:
        status = start_meeting(client, account, f"http://{name}:8080/hook")
        assert status["registered"] is False
        assert status["code"] == "callback-url-forbidden"
        assert status["message"].startswith("callbackUrl resolves to a private or reserved")

    def test_a_localhost_alert_rule_is_refused_through_the_api(
        self, client: FlaskClient, account: Account
    ) -> None:
        response = client.post(
            "/v1/alerts/rules",
            json={"type": "delivery.failed", "callbackUrl": "http://localhost:8080/alerts"},
            headers=account.headers,
        )
        assert response.status_code == 400
        error = response.get_json()
        assert error["code"] == "callback-url-forbidden"
        assert [e["field"] for e in error["errors"]] == ["callbackUrl"]

    @pytest.mark.parametrize("name", ["localhost", "LocalHost"])
    def test_the_connect_time_guard_refuses_localhost(
        self, receiver: CallbackReceiver, name: str
    ) -> None:
        outcome = deliver(receiver.url(host=name), PRODUCTION)
        assert outcome.error == "ssrf-refused"
        assert receiver.received == []

    def test_the_embedded_default_delivers_to_localhost(self, receiver: CallbackReceiver) -> None:
        # The same name and receiver, with the allow-list `make run` has: the refusal above
        # is the guard's doing, not a receiver that could not be reached.
        outcome = deliver(receiver.url(host="localhost"), EMBEDDED)
        assert outcome.status_code == 204
        (got,) = receiver.wait_for(1)
        assert got.headers["host"] == f"localhost:{receiver.port}"

    def test_an_absolute_localhost_never_receives_a_callback(
        self, receiver: CallbackReceiver
    ) -> None:
        # "localhost." is accepted at registration where it does not resolve (as here: glibc's
        # hosts file has no trailing dot), refused where it resolves; either way no callback.
        outcome = deliver(receiver.url(host="localhost."), PRODUCTION)
        assert outcome.error in {"dns-error", "ssrf-refused"}
        assert receiver.received == []

    @pytest.mark.parametrize("host", LEGACY_LOOPBACK)
    def test_legacy_spellings_of_loopback_are_loopback_to_the_resolver(self, host: str) -> None:
        # Why they are refused at registration although no check of ours would call them
        # addresses: the system resolver connects them to this machine.
        assert ssrf.resolve(host, 80) == [ipaddress.ip_address("127.0.0.1")]

    @pytest.mark.parametrize("host", [*LEGACY_LOOPBACK, *LOOPBACK_LITERALS])
    def test_numeric_loopback_is_not_registered_through_the_api(
        self, client: FlaskClient, account: Account, host: str
    ) -> None:
        status = start_meeting(client, account, f"http://{host}:8080/hook")
        assert status["registered"] is False
        assert status["code"] in {"callback-url-forbidden", "callback-url-invalid"}

    @pytest.mark.parametrize("host", [*LEGACY_LOOPBACK, "[::ffff:127.0.0.1]", "[::ffff:7f00:1]"])
    def test_numeric_loopback_is_refused_at_connect_time(
        self, receiver: CallbackReceiver, host: str
    ) -> None:
        outcome = deliver(receiver.url(host=host), PRODUCTION)
        assert outcome.error == "ssrf-refused"
        assert receiver.received == []


# --- a name with public and private answers, in a sandbox with a hosts file of its own ---

# A public address that exists only on the sandbox's loopback interface; outside 198.18.0.0/15.
PUBLIC_ADDRESS = "198.20.0.10"
MIXED = {
    "mixed-private.hooks.test": "10.0.0.7",
    "mixed-metadata.hooks.test": "169.254.169.254",
    "mixed-loopback.hooks.test": "127.0.0.1",
    "mixed-ula.hooks.test": "fd00::7",
}
PUBLIC_NAME = "public.hooks.test"
SANDBOX_HOSTS = "".join(
    [f"127.0.0.1 localhost\n{PUBLIC_ADDRESS} {PUBLIC_NAME}\n"]
    + [f"{PUBLIC_ADDRESS} {name}\n{private} {name}\n" for name, private in MIXED.items()]
)


class _Recorder(ThreadingHTTPServer):
    """A callback receiver on the sandbox's public address: records each request's path."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                recorder.paths.append(f"{self.headers['Host']}{self.path}")
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return

        super().__init__((PUBLIC_ADDRESS, 0), Handler)
        self.daemon_threads = True


def probe_in_sandbox() -> None:
    """Resolve, register and deliver every sandbox name; print what happened as JSON.

    Runs inside the sandbox (see `sandbox`), never in the test process.
    """
    recorder = _Recorder()
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    port = recorder.server_address[1]
    report: dict[str, dict[str, Any]] = {}
    for name in [PUBLIC_NAME, *MIXED]:
        url = f"http://{name}:{port}/hook"
        try:
            ssrf.check_callback_url(url, PRODUCTION)
            registration = None
        except ssrf.CallbackUrlRefused as refused:
            registration = refused.code
        outcome = deliver(url, PRODUCTION)
        report[name] = {
            "answers": [str(address) for address in ssrf.resolve(name, port)],
            "registration": registration,
            "delivery": outcome.error or outcome.status_code,
        }
    recorder.shutdown()
    print(json.dumps({"port": port, "names": report, "received": recorder.paths}))  # noqa: T201  (the report goes to the parent)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        _unavailable("unshare(1) and ip(8) are needed for the resolver sandbox")
    hosts = tmp_path_factory.mktemp("resolver") / "hosts"
    hosts.write_text(SANDBOX_HOSTS)
    setup = (
        'mount --bind "$0" /etc/hosts && ip link set lo up'
        f' && ip addr add {PUBLIC_ADDRESS}/32 dev lo && exec "$@"'
    )
    probe = f"from {__name__} import probe_in_sandbox; probe_in_sandbox()"
    done = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "--net", "--", "sh", "-c", setup,
         str(hosts), sys.executable, "-c", probe],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0 and "Traceback" not in done.stderr:
        _unavailable(f"cannot make the resolver sandbox: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def _unavailable(reason: str) -> None:
    # Skip where namespaces are not allowed (some containers); CI must run it.
    if REQUIRE_SERVICES:
        pytest.fail(reason)
    pytest.skip(reason)


class TestMixedAnswers:
    def test_the_sandbox_resolver_answers_from_its_own_hosts_file(
        self, sandbox: dict[str, Any]
    ) -> None:
        names = sandbox["names"]
        assert names[PUBLIC_NAME]["answers"] == [PUBLIC_ADDRESS]
        for name, private in MIXED.items():
            assert sorted(names[name]["answers"]) == sorted([PUBLIC_ADDRESS, private])
        # glibc sorts an unreachable destination last (RFC 6724 rule 1): the first answer of
        # this name is the public one, the one a guard that checked only the first would use.
        assert names["mixed-private.hooks.test"]["answers"][0] == PUBLIC_ADDRESS

    def test_a_name_with_only_public_answers_is_registered_and_delivered(
        self, sandbox: dict[str, Any]
    ) -> None:
        public = sandbox["names"][PUBLIC_NAME]
        assert public["registration"] is None
        assert public["delivery"] == 204

    @pytest.mark.parametrize("name", list(MIXED))
    def test_a_name_with_a_public_and_a_private_answer_is_refused_at_registration(
        self, sandbox: dict[str, Any], name: str
    ) -> None:
        assert sandbox["names"][name]["registration"] == "callback-url-forbidden"

    @pytest.mark.parametrize("name", list(MIXED))
    def test_a_name_with_a_public_and_a_private_answer_is_refused_at_connect_time(
        self, sandbox: dict[str, Any], name: str
    ) -> None:
        assert sandbox["names"][name]["delivery"] == "ssrf-refused"

    def test_only_the_public_name_reached_the_receiver(self, sandbox: dict[str, Any]) -> None:
        assert sandbox["received"] == [f"{PUBLIC_NAME}:{sandbox['port']}/hook"]
