from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from core import http_deadline, ssrf
from core.config import Settings
from tests.callback_receiver import TLS_CA, CallbackReceiver

ip = ipaddress.ip_address
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)

FORBIDDEN_IPV4 = [
    ("0.0.0.0", "this network / unspecified"),  # noqa: S104
    ("0.1.2.3", "this network"),
    ("10.0.0.1", "private"),
    ("10.255.255.255", "private"),
    ("100.64.0.1", "CGNAT"),
    ("100.127.255.254", "CGNAT"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("169.254.169.254", "link-local / cloud metadata"),
    ("169.254.0.1", "link-local"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.0.0.8", "IETF protocol assignments"),
    ("192.0.2.10", "documentation"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("192.168.1.1", "private"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.254", "benchmarking"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
]
FORBIDDEN_IPV6 = [
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "unique local"),
    ("fd12:3456::1", "unique local"),
    ("fe80::1", "link-local"),
    ("febf:ffff::1", "link-local"),
    ("fec0::1", "site-local (deprecated)"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "global multicast"),
    ("100::1", "discard-only"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("2001:10::1", "ORCHID"),
    ("2001:20::1", "ORCHIDv2"),
    ("5f00::1", "SRv6 SIDs"),
    ("4000::1", "unassigned, outside 2000::/3"),
    ("64:ff9b:1::1", "local-use NAT64"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::ffff:169.254.169.254", "IPv4-mapped metadata"),
    ("::ffff:100.64.0.1", "IPv4-mapped CGNAT"),
    ("::ffff:0.0.0.0", "IPv4-mapped unspecified"),
    ("::127.0.0.1", "IPv4-compatible (deprecated)"),
    ("::8.8.8.8", "IPv4-compatible (deprecated), even public"),
    ("64:ff9b::a9fe:a9fe", "NAT64 carrying 169.254.169.254"),
    ("64:ff9b::7f00:1", "NAT64 carrying 127.0.0.1"),
    ("2002:c0a8:0101::1", "6to4 carrying 192.168.1.1"),
    ("2002:7f00:0001::1", "6to4 carrying 127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo, client 192.0.2.45"),
    ("2001:0:0a00:0001:8000:63bf:f7f7:f7f7", "Teredo, server 10.0.0.1"),
]
PUBLIC = [
    "93.184.216.34",
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",  # just below CGNAT
    "100.128.0.0",  # just above CGNAT
    "172.15.255.255",
    "172.32.0.0",
    "192.0.1.255",
    "198.17.255.255",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",  # mapped public
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8 (what DNS64 gives an IPv6-only host)
    "2002:0808:0808::1",  # 6to4 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo, server 65.54.227.120, client 8.8.8.8
]


class TestIsForbidden:
    @pytest.mark.parametrize(("address", "why"), FORBIDDEN_IPV4)
    def test_ipv4_special_ranges_are_forbidden(self, address: str, why: str) -> None:
        assert ssrf.is_forbidden(ip(address)), why

    @pytest.mark.parametrize(("address", "why"), FORBIDDEN_IPV6)
    def test_ipv6_special_ranges_are_forbidden(self, address: str, why: str) -> None:
        assert ssrf.is_forbidden(ip(address)), why

    @pytest.mark.parametrize("address", PUBLIC)
    def test_public_addresses_pass(self, address: str) -> None:
        assert not ssrf.is_forbidden(ip(address))

    def test_mapped_address_is_judged_as_its_ipv4(self) -> None:
        assert ssrf.effective_ipv4(ipaddress.IPv6Address("::ffff:10.0.0.1")) == ip("10.0.0.1")
        assert ssrf.effective_ipv4(ipaddress.IPv6Address("64:ff9b::a00:1")) == ip("10.0.0.1")
        assert ssrf.effective_ipv4(ipaddress.IPv6Address("2002:a00:1::")) == ip("10.0.0.1")
        assert ssrf.effective_ipv4(ipaddress.IPv6Address("2606:4700::1")) is None

    def test_allow_list_admits_named_networks_only(self) -> None:
        allowed = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
        assert not ssrf.is_forbidden(ip("127.0.0.1"), allowed)
        assert not ssrf.is_forbidden(ip("127.9.9.9"), allowed)
        assert not ssrf.is_forbidden(ip("fd00::5"), allowed)
        assert ssrf.is_forbidden(ip("10.0.0.1"), allowed)
        assert ssrf.is_forbidden(ip("::1"), allowed)
        assert ssrf.is_forbidden(ip("0.0.0.0"), allowed)  # noqa: S104
        assert ssrf.is_forbidden(ip("fc00::1"), allowed)

    def test_allow_list_applies_to_the_ipv4_inside_a_mapped_address(self) -> None:
        assert not ssrf.is_forbidden(ip("::ffff:127.0.0.1"), LOOPBACK)
        assert not ssrf.is_forbidden(ip("64:ff9b::7f00:1"), LOOPBACK)
        assert ssrf.is_forbidden(ip("::ffff:10.0.0.1"), LOOPBACK)

    def test_an_ipv6_network_never_admits_an_ipv4_address(self) -> None:
        assert ssrf.is_forbidden(ip("10.0.0.1"), [ipaddress.ip_network("::/0")])
        assert not ssrf.is_forbidden(ip("10.0.0.1"), [ipaddress.ip_network("10.0.0.0/8")])


@pytest.fixture
def resolver(monkeypatch: pytest.MonkeyPatch) -> Callable[..., list[str]]:
    """Replace DNS: `resolver("a.example", ["1.2.3.4"])`; records every lookup."""
    table: dict[str, list[str]] = {}
    lookups: list[str] = []

    def fake(host: str, port: int) -> list[ssrf.IPAddress]:
        lookups.append(host)
        if host.rstrip(".") not in table:
            raise OSError(f"no such host {host}")
        return [ip(a) for a in table[host.rstrip(".")]]

    monkeypatch.setattr(ssrf, "resolve", fake)

    def set_answer(host: str | None = None, answers: list[str] | None = None) -> list[str]:
        if host is not None:
            table[host] = answers or []
        return lookups

    return set_answer


class TestCheckCallbackUrl:
    @pytest.mark.parametrize(
        "url",
        [
            "https://93.184.216.34/hook",
            "http://93.184.216.34:8080/hook?x=1#frag",
            "HTTPS://[2606:4700:4700::1111]/hook",
            "https://hooks.example.com/a/b",
            "https://hooks.example.com./absolute-name",
        ],
    )
    def test_public_urls_are_accepted(self, url: str, resolver: Callable[..., list[str]]) -> None:
        resolver("hooks.example.com", ["93.184.216.34", "2606:4700:4700::1111"])
        ssrf.check_callback_url(url)

    @pytest.mark.parametrize(
        ("url", "code"),
        [
            (None, "callback-url-invalid"),
            (42, "callback-url-invalid"),
            ("", "callback-url-invalid"),
            ("not a url", "callback-url-invalid"),
            ("hooks.example.com/hook", "callback-url-invalid"),
            ("https://" + "a" * 2050, "callback-url-invalid"),
            ("https://hooks.example.com/a b", "callback-url-invalid"),
            ("https://hooks.example.com/\r\nX: y", "callback-url-invalid"),
            ("https://hooks.example.com\\@10.0.0.1/", "callback-url-invalid"),
            ("https://user:pw@93.184.216.34/", "callback-url-invalid"),
            ("https://user@93.184.216.34/", "callback-url-invalid"),
            ("https:///nohost", "callback-url-invalid"),
            ("https://93.184.216.34:99999/", "callback-url-invalid"),
            ("https://93.184.216.34:0/", "callback-url-invalid"),
            ("https://[::1/", "callback-url-invalid"),
            ("https://[fe80::1%25eth0]/", "callback-url-invalid"),
            ("https://2130706433/", "callback-url-invalid"),  # 127.0.0.1 as one number
            ("https://0x7f000001/hook", "callback-url-invalid"),
            ("https://0x7f.1/", "callback-url-invalid"),
            ("https://127.1/", "callback-url-invalid"),
            ("https://-bad-.example.com/", "callback-url-invalid"),
            ("https://a..example.com/", "callback-url-invalid"),
            ("https://" + "a" * 64 + ".example.com/", "callback-url-invalid"),
            ("ftp://93.184.216.34/hook", "callback-url-scheme"),
            ("gopher://93.184.216.34/", "callback-url-scheme"),
            ("file:///etc/passwd", "callback-url-scheme"),
            ("javascript:alert(1)", "callback-url-scheme"),
            ("http://10.0.0.1/hook", "callback-url-forbidden"),
            ("http://127.0.0.1:8080/hook", "callback-url-forbidden"),
            ("http://169.254.169.254/latest/meta-data", "callback-url-forbidden"),
            ("http://0.0.0.0:8000/", "callback-url-forbidden"),
            ("http://[::1]:8080/hook", "callback-url-forbidden"),
            ("http://[::ffff:a00:1]/hook", "callback-url-forbidden"),
            ("http://[::ffff:127.0.0.1]/hook", "callback-url-forbidden"),
            ("http://[fd00::1]/hook", "callback-url-forbidden"),
            ("http://[64:ff9b::a9fe:a9fe]/", "callback-url-forbidden"),
        ],
    )
    def test_refusals(self, url: object, code: str, resolver: Callable[..., list[str]]) -> None:
        with pytest.raises(ssrf.CallbackUrlRefused) as refused:
            ssrf.check_callback_url(url)
        assert refused.value.code == code
        assert refused.value.message
        assert resolver() == []  # refused before any DNS lookup

    def test_hostname_resolving_to_private_is_refused(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("internal.example.com", ["192.168.1.10"])
        with pytest.raises(ssrf.CallbackUrlRefused) as refused:
            ssrf.check_callback_url("https://internal.example.com/x")
        assert refused.value.code == "callback-url-forbidden"
        assert "192.168.1.10" in refused.value.message

    def test_hostname_with_any_private_answer_is_refused(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("round-robin.example", ["93.184.216.34", "10.1.2.3"])
        with pytest.raises(ssrf.CallbackUrlRefused, match=r"10\.1\.2\.3"):
            ssrf.check_callback_url("https://round-robin.example/hook")

    def test_hostname_resolving_to_mapped_private_is_refused(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("sneaky.example", ["::ffff:169.254.169.254"])
        with pytest.raises(ssrf.CallbackUrlRefused):
            ssrf.check_callback_url("https://sneaky.example/hook")

    def test_unresolvable_hostname_is_accepted_at_registration(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        ssrf.check_callback_url("https://not-yet.example/hook")
        assert resolver() == ["not-yet.example"]

    def test_allow_list_admits_a_hostname_resolving_to_loopback(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("localhost", ["127.0.0.1", "::1"])
        ssrf.check_callback_url("http://localhost:9999/hook", [*LOOPBACK, ip_net("::1/128")])
        with pytest.raises(ssrf.CallbackUrlRefused):
            ssrf.check_callback_url("http://localhost:9999/hook", LOOPBACK)  # ::1 not allowed

    def test_literal_address_is_not_looked_up(self, resolver: Callable[..., list[str]]) -> None:
        ssrf.check_callback_url("http://127.0.0.1:9/x", LOOPBACK)
        assert resolver() == []

    def test_international_hostname_is_looked_up_in_punycode_form(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("bücher.example", ["10.0.0.1"])
        with pytest.raises(ssrf.CallbackUrlRefused):
            ssrf.check_callback_url("https://bücher.example/hook")


def ip_net(cidr: str) -> ssrf.IPNetwork:
    return ipaddress.ip_network(cidr)


class TestConnectTimeCheck:
    def test_unresolvable_hostname_is_refused_at_connect(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        with pytest.raises(ssrf.Unresolvable) as refused:
            ssrf.pinned_target("https://not-yet.example/hook")
        assert refused.value.code == "callback-url-unresolvable"

    def test_answer_that_changes_after_registration_is_caught_at_connect(
        self, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("rebinding.example", ["93.184.216.34"])
        ssrf.check_callback_url("https://rebinding.example/hook")
        resolver("rebinding.example", ["169.254.169.254"])
        with pytest.raises(ssrf.ForbiddenAddress) as refused:
            ssrf.pinned_target("https://rebinding.example/hook")
        assert refused.value.code == "callback-url-forbidden"
        assert refused.value.address == ip("169.254.169.254")

    def test_pinned_target_keeps_host_and_port(self, resolver: Callable[..., list[str]]) -> None:
        resolver("hooks.example.com", ["8.8.4.4"])
        target = ssrf.pinned_target("https://Hooks.Example.com/cb?x=1")
        assert target == ssrf.Target(
            scheme="https", host="hooks.example.com", port=443, address=ip("8.8.4.4")
        )


@pytest.fixture
def tls_receiver() -> Iterator[CallbackReceiver]:
    server = CallbackReceiver(tls=True).start()
    yield server
    server.stop()


def guarded(allowed: tuple[ssrf.IPNetwork, ...] = LOOPBACK) -> requests.Session:
    session = requests.Session()
    session.trust_env = False
    adapter = ssrf.GuardedAdapter(allowed, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class TestGuardedAdapter:
    def test_connects_to_the_checked_address_and_keeps_the_host_header(
        self, receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        # `hooks.test` exists in no DNS: reaching the server proves we connected to the
        # address the guard checked, not to a second lookup's answer.
        resolver("hooks.test", ["127.0.0.1"])
        response = guarded().post(receiver.url(host="hooks.test"), data=b"{}", timeout=5)
        assert response.status_code == 204
        (got,) = receiver.wait_for(1)
        assert got.headers["host"] == f"hooks.test:{receiver.port}"
        assert resolver() == ["hooks.test"]

    def test_one_lookup_per_new_connection_and_pooled_reuse(
        self, receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("hooks.test", ["127.0.0.1"])
        http = guarded()
        for _ in range(3):
            assert http.post(receiver.url(host="hooks.test"), data=b"{}", timeout=5).ok
        assert resolver() == ["hooks.test"]  # keep-alive: one connection, one lookup

    def test_forbidden_answer_is_refused_before_connecting(
        self, receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("hooks.test", ["127.0.0.1"])
        with pytest.raises(ssrf.ForbiddenAddress) as refused:
            guarded(allowed=()).post(receiver.url(host="hooks.test"), data=b"{}", timeout=5)
        assert refused.value.address == ip("127.0.0.1")
        assert receiver.received == []

    def test_any_forbidden_answer_refuses_even_if_the_first_is_allowed(
        self, receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("hooks.test", ["127.0.0.1", "10.0.0.7"])
        with pytest.raises(ssrf.ForbiddenAddress):
            guarded().post(receiver.url(host="hooks.test"), data=b"{}", timeout=5)
        assert receiver.received == []

    def test_literal_forbidden_address_is_refused(self, receiver: CallbackReceiver) -> None:
        with pytest.raises(ssrf.ForbiddenAddress):
            guarded(allowed=()).post(receiver.url(), data=b"{}", timeout=5)
        with pytest.raises(ssrf.ForbiddenAddress):
            guarded(allowed=()).post(receiver.url(host="[::ffff:127.0.0.1]"), data=b"{}", timeout=5)
        assert receiver.received == []

    def test_dns_change_between_registration_and_delivery(
        self, receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        url = receiver.url(host="hooks.test")
        resolver("hooks.test", ["93.184.216.34"])
        ssrf.check_callback_url(url)  # registered while public
        resolver("hooks.test", ["127.0.0.1"])
        with pytest.raises(ssrf.ForbiddenAddress):
            guarded(allowed=()).post(url, data=b"{}", timeout=5)
        assert receiver.received == []

    def test_unresolvable_name_fails_the_request(self, resolver: Callable[..., list[str]]) -> None:
        with pytest.raises(ssrf.Unresolvable):
            guarded().post("http://gone.test:9/x", data=b"{}", timeout=5)

    def test_next_address_is_tried_when_the_first_refuses(
        self, receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("hooks.test", ["::1", "127.0.0.1"])  # the receiver listens on IPv4 only
        http = guarded(allowed=(*LOOPBACK, ip_net("::1/128")))
        response = http.post(receiver.url(host="hooks.test"), data=b"{}", timeout=5)
        assert response.status_code == 204

    def test_proxies_are_never_used(self) -> None:
        with pytest.raises(ssrf.CallbackUrlRefused) as refused:
            guarded().post(
                "http://93.184.216.34/x", proxies={"http": "http://127.0.0.1:3128"}, timeout=5
            )
        assert refused.value.code == "callback-url-proxy"

    def test_tls_uses_the_hostname_for_sni_and_certificate(
        self, tls_receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("hooks.test", ["127.0.0.1"])
        response = guarded().post(
            tls_receiver.url(host="hooks.test"), data=b"{}", timeout=5, verify=str(TLS_CA)
        )
        assert response.status_code == 204
        (got,) = tls_receiver.wait_for(1)
        assert got.server_name == "hooks.test"
        assert got.headers["host"] == f"hooks.test:{tls_receiver.port}"

    def test_tls_certificate_for_another_name_is_rejected(
        self, tls_receiver: CallbackReceiver, resolver: Callable[..., list[str]]
    ) -> None:
        resolver("other.test", ["127.0.0.1"])
        with pytest.raises(requests.exceptions.SSLError):
            guarded().post(
                tls_receiver.url(host="other.test"), data=b"{}", timeout=5, verify=str(TLS_CA)
            )
        assert tls_receiver.received == []


class TestAllowListSetting:
    """CALLBACK_ALLOWED_NETWORKS, as the service reads it, drives the registration check."""

    @staticmethod
    def allowed(
        environ: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> tuple[ssrf.IPNetwork, ...]:
        monkeypatch.chdir(tmp_path)  # the embedded mode makes ./var
        return Settings.from_env(environ).callback_allowed_networks

    @staticmethod
    def verdict(url: str, allowed: tuple[ssrf.IPNetwork, ...]) -> str:
        try:
            ssrf.check_callback_url(url, allowed)
        except ssrf.CallbackUrlRefused as refused:
            return refused.code
        return "ok"

    def test_embedded_default_admits_loopback_only(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        resolver: Callable[..., list[str]],
    ) -> None:
        resolver("localhost", ["127.0.0.1", "::1"])
        allowed = self.allowed({}, tmp_path, monkeypatch)
        for url in (
            "http://127.0.0.1:9000/hook",
            "http://[::1]:9000/hook",
            "http://localhost:9000/hook",
            "http://[::ffff:127.0.0.1]/hook",
        ):
            assert self.verdict(url, allowed) == "ok", url
        for url in (
            "http://10.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://100.64.0.1/",
        ):
            assert self.verdict(url, allowed) == "callback-url-forbidden", url

    def test_production_default_refuses_loopback(
        self,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
        resolver: Callable[..., list[str]],
    ) -> None:
        resolver("localhost", ["127.0.0.1", "::1"])
        environ = {"DATABASE_URL": "sqlite://", "BROKER_URL": "memory://"}
        allowed = self.allowed(environ, tmp_path, monkeypatch)
        assert allowed == ()
        for url in ("http://127.0.0.1/", "http://[::1]/", "http://localhost/"):
            assert self.verdict(url, allowed) == "callback-url-forbidden", url

    def test_named_networks_ipv4_and_ipv6_are_admitted_and_nothing_else(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        environ = {
            "DATABASE_URL": "sqlite://",
            "BROKER_URL": "memory://",
            "CALLBACK_ALLOWED_NETWORKS": "10.1.0.0/16, fd12:3456::/32",
        }
        allowed = self.allowed(environ, tmp_path, monkeypatch)
        assert self.verdict("http://10.1.2.3/", allowed) == "ok"
        assert self.verdict("http://[fd12:3456::7]/", allowed) == "ok"
        assert self.verdict("http://10.2.0.1/", allowed) == "callback-url-forbidden"
        assert self.verdict("http://127.0.0.1/", allowed) == "callback-url-forbidden"
        assert self.verdict("http://[fd12:3457::1]/", allowed) == "callback-url-forbidden"

    def test_an_empty_setting_replaces_the_embedded_default(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        allowed = self.allowed({"CALLBACK_ALLOWED_NETWORKS": ""}, tmp_path, monkeypatch)
        assert self.verdict("http://127.0.0.1:9000/", allowed) == "callback-url-forbidden"


class TestSlowNameLookup:
    @pytest.fixture
    def hanging_dns(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
        """getaddrinfo that hangs until released (or 60 s), as a broken resolver does."""
        release = threading.Event()

        def hang(*_args: object, **_kwargs: object) -> list[object]:
            release.wait(60)  # far beyond the bounds below, which leave room for a loaded machine
            raise socket.gaierror(socket.EAI_AGAIN, "resolver gave up")

        monkeypatch.setattr(socket, "getaddrinfo", hang)
        monkeypatch.setattr(ssrf, "DNS_TIMEOUT_SECONDS", 0.3)
        yield release
        release.set()

    def test_registration_does_not_wait_for_a_hanging_resolver(
        self, hanging_dns: threading.Event
    ) -> None:
        started = time.monotonic()
        ssrf.check_callback_url("https://slow-dns.example/hook")  # accepted, as unresolvable
        assert time.monotonic() - started < 10

    def test_connect_time_lookup_gives_up_as_unresolvable(
        self, hanging_dns: threading.Event
    ) -> None:
        started = time.monotonic()
        with pytest.raises(ssrf.Unresolvable):
            ssrf.pinned_target("https://slow-dns.example/hook")
        assert time.monotonic() - started < 10

    def test_lookup_waits_no_longer_than_the_attempt_deadline(
        self, hanging_dns: threading.Event, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(ssrf, "DNS_TIMEOUT_SECONDS", 30.0)
        started = time.monotonic()
        with http_deadline.limit(0.3), pytest.raises(ssrf.Unresolvable):
            ssrf.pinned_target("https://slow-dns.example/hook")
        assert time.monotonic() - started < 10

    def test_a_real_answer_still_comes_through(self) -> None:
        assert ssrf.resolve("127.0.0.1", 80) == [ip("127.0.0.1")]
