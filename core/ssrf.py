"""SSRF guard: which callback URLs we accept, and a transport that connects only where it checked.

Callback URLs are checked twice (SPEC 6): at registration (`check_callback_url`) and at connect
time (`GuardedAdapter`), because DNS answers can change in between. The connect-time guard
resolves the hostname once, refuses the whole delivery if ANY answer is forbidden, and then
connects to exactly the addresses it checked, never asking DNS again, while the Host header,
TLS SNI and certificate verification keep using the hostname.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util import connection as urllib3_connection

from core import http_deadline

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2048  # the width of webhooks.callback_url
DNS_TIMEOUT_SECONDS = 5.0  # a registration or an attempt waits no longer for a name lookup
_FORBIDDEN_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_DNS_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_LEGACY_IPV4_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")


def _v4(*cidrs: str) -> tuple[ipaddress.IPv4Network, ...]:
    return tuple(ipaddress.IPv4Network(cidr) for cidr in cidrs)


def _v6(*cidrs: str) -> tuple[ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.IPv6Network(cidr) for cidr in cidrs)


# IANA's IPv4 special-purpose registry, minus the few entries that are globally reachable
# unicast (AS112, AMT), plus multicast and the reserved class E. Documentation and
# benchmarking ranges are refused: no real receiver lives there, and some labs route them.
FORBIDDEN_IPV4 = _v4(
    "0.0.0.0/8",  # "this network"; Linux connects 0.0.0.0 to the local host
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # CGNAT shared address space
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments (DS-Lite, NAT64 discovery, ...)
    "192.0.2.0/24",  # TEST-NET-1 documentation
    "192.88.99.0/24",  # deprecated 6to4 relay anycast
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # TEST-NET-2 documentation
    "203.0.113.0/24",  # TEST-NET-3 documentation
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, including 255.255.255.255 broadcast
)

# IPv6 is judged positively: only global unicast 2000::/3 can be a callback receiver, minus
# the special ranges inside it. Everything outside 2000::/3 (loopback ::1, unspecified ::,
# ULA fc00::/7, link-local fe80::/10, site-local fec0::/10, multicast ff00::/8, discard
# 100::/64, SRv6 5f00::/16, ...) is refused, except the forms that embed an IPv4 address,
# which are judged by that address (see `effective_ipv4`).
GLOBAL_UNICAST_IPV6 = ipaddress.IPv6Network("2000::/3")
FORBIDDEN_IPV6 = _v6(
    "2001:2::/48",  # benchmarking
    "2001:10::/28",  # ORCHID (deprecated)
    "2001:20::/28",  # ORCHIDv2: identifiers, not routable locators
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation (RFC 9637)
)
IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated (RFC 4291): never a real peer
NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")  # site-local translators: refused
SIX_TO_FOUR = ipaddress.IPv6Network("2002::/16")
TEREDO = ipaddress.IPv6Network("2001::/32")


class CallbackUrlRefused(Exception):
    """A callback URL we will not register; `code` is the stable code the API reports."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ForbiddenAddress(CallbackUrlRefused):
    """The host is, or resolves to, an address the guard refuses.

    Like every CallbackUrlRefused it is not an OSError, so when the connect-time guard
    raises it urllib3 and requests let it through unwrapped, and the delivery logs it as
    `ssrf-refused` rather than as a connection error.
    """

    def __init__(self, host: str, address: IPAddress) -> None:
        super().__init__(
            "callback-url-forbidden", f"{host} is or resolves to a forbidden address ({address})"
        )
        self.host = host
        self.address = address


class Unresolvable(CallbackUrlRefused):
    """The host name does not resolve (at connect time this fails the attempt)."""

    def __init__(self, host: str) -> None:
        super().__init__("callback-url-unresolvable", f"cannot resolve {host}")
        self.host = host


@dataclass(frozen=True)
class Target:
    """A checked destination: connect to `address`, present `host` (Host header, TLS SNI)."""

    scheme: str
    host: str
    port: int
    address: IPAddress


def resolve(host: str, port: int) -> list[IPAddress]:
    """Return the addresses `host` resolves to, in the resolver's order, without duplicates.

    Raises OSError when the name does not resolve within DNS_TIMEOUT_SECONDS (or the current
    attempt's deadline, if sooner). Tests monkeypatch this.
    """
    infos = _getaddrinfo_with_timeout(host, port)
    found: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        # IPv6 link-local answers may carry a zone ("fe80::1%eth0"); the zone is not part of
        # the address we judge.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def _getaddrinfo_with_timeout(host: str, port: int) -> list[Any]:
    # getaddrinfo() takes no timeout and a broken resolver can hold it for tens of seconds,
    # a registration request or a delivery worker with it. It runs in a daemon thread we
    # stop waiting for; the thread itself ends when the resolver gives up.
    timeout = DNS_TIMEOUT_SECONDS
    deadline = http_deadline.current()
    if deadline is not None:
        timeout = min(timeout, deadline.remaining())
    answer: list[Any] = []
    failure: list[BaseException] = []

    def lookup() -> None:
        try:
            answer.extend(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except (OSError, UnicodeError) as exc:
            failure.append(exc)

    thread = threading.Thread(target=lookup, name="ssrf-dns", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise socket.gaierror(socket.EAI_AGAIN, f"no answer for {host} within {timeout:.1f} s")
    if failure:
        raise failure[0]
    return answer


def effective_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """Return the IPv4 address an IPv6 address stands for (mapped, NAT64, 6to4), if any."""
    if ip in IPV4_MAPPED:
        return ip.ipv4_mapped
    if ip in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in SIX_TO_FOUR:
        return ip.sixtofour
    return None


def is_forbidden(ip: IPAddress, allowed_networks: Iterable[IPNetwork] = ()) -> bool:
    """Tell whether a callback must not connect to `ip`; an allowed network always admits.

    An IPv6 address that carries an IPv4 address (mapped `::ffff:a.b.c.d`, NAT64
    `64:ff9b::a.b.c.d`, 6to4 `2002:aabb:ccdd::`) is judged as that IPv4 address, allow-list
    included; Teredo is refused when its server or client address would be.
    """
    allowed = tuple(allowed_networks)
    if any(ip.version == net.version and ip in net for net in allowed):
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return any(ip in net for net in FORBIDDEN_IPV4)
    return _is_forbidden_ipv6(ip, allowed)


def _is_forbidden_ipv6(ip: ipaddress.IPv6Address, allowed: tuple[IPNetwork, ...]) -> bool:
    embedded = effective_ipv4(ip)
    if embedded is not None:
        return is_forbidden(embedded, allowed)
    if ip in IPV4_COMPATIBLE or ip not in GLOBAL_UNICAST_IPV6:
        return True
    if any(ip in net for net in FORBIDDEN_IPV6):
        return True
    if ip in TEREDO and ip.teredo is not None:
        server, client = ip.teredo
        return is_forbidden(server, allowed) or is_forbidden(client, allowed)
    return False


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def addresses_for(host: str, port: int) -> list[IPAddress]:
    """Return a literal address as itself, else what `resolve` answers."""
    literal = _literal(host.strip("[]"))
    return [literal] if literal is not None else resolve(host, port)


def _refuse(message: str) -> CallbackUrlRefused:
    return CallbackUrlRefused("callback-url-invalid", message)


def _check_hostname(host: str) -> None:
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise _refuse("callbackUrl has an invalid hostname") from None
    labels = ascii_host.rstrip(".").split(".")
    if len(ascii_host) > 253 or not all(_DNS_LABEL.match(label) for label in labels):
        raise _refuse("callbackUrl has an invalid hostname")
    # "2130706433", "0x7f.1" and "127.1" are IPv4 to getaddrinfo; no real TLD is numeric.
    if _LEGACY_IPV4_LABEL.match(labels[-1]):
        raise _refuse("callbackUrl must write an IPv4 address as four decimals")


def parse_callback_url(url: object) -> tuple[str, int]:
    """Return the host and port of a well-formed http(s) callback URL, else refuse it."""
    if not isinstance(url, str) or not url:
        raise _refuse("callbackUrl must be a non-empty string")
    if len(url) > MAX_URL_LENGTH:
        raise _refuse(f"callbackUrl must be at most {MAX_URL_LENGTH} characters")
    if _FORBIDDEN_CHARS.search(url):
        raise _refuse("callbackUrl must not contain spaces, backslashes or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise _refuse("callbackUrl is not a valid URL") from None
    scheme = parts.scheme.lower()
    if scheme and scheme not in SCHEMES:
        raise CallbackUrlRefused("callback-url-scheme", "callbackUrl must be an http or https URL")
    if not scheme or not parts.netloc:
        raise _refuse("callbackUrl must be an absolute http or https URL")
    if parts.username is not None or parts.password is not None:
        # Credentials would be stored and listed with every delivery; use a path token instead.
        raise _refuse("callbackUrl must not contain a user name or password")
    host = parts.hostname
    if not host:
        raise _refuse("callbackUrl has no host")
    if port == 0:
        raise _refuse("callbackUrl has an invalid port")
    if "%" in host:
        # A zone id ("fe80::1%eth0") names an interface of ours, never a remote receiver.
        raise _refuse("callbackUrl must not carry an IPv6 zone id")
    if _literal(host) is None:
        if ":" in host:
            raise _refuse("callbackUrl has an invalid address")
        _check_hostname(host)
    return host, port or (443 if scheme == "https" else 80)


def checked_addresses(
    host: str, port: int, allowed_networks: Iterable[IPNetwork] = ()
) -> list[IPAddress]:
    """Resolve `host` once and return its addresses if none is forbidden.

    Every answer must pass: an attacker who controls one record of a round-robin name must
    not slip a private address in. Raises Unresolvable or ForbiddenAddress.
    """
    try:
        addresses = addresses_for(host, port)
    except (OSError, UnicodeError):
        raise Unresolvable(host) from None
    if not addresses:
        raise Unresolvable(host)
    allowed = tuple(allowed_networks)
    for address in addresses:
        if is_forbidden(address, allowed):
            raise ForbiddenAddress(host, address)
    return addresses


def check_callback_url(url: object, allowed_networks: Iterable[IPNetwork] = ()) -> None:
    """Raise CallbackUrlRefused unless `url` may be registered as a callback.

    A hostname that does not resolve now is accepted: DNS may not be ready yet, and the
    connect-time guard judges every delivery anyway.
    """
    host, port = parse_callback_url(url)
    try:
        checked_addresses(host, port, allowed_networks)
    except Unresolvable:
        return
    except ForbiddenAddress as refused:
        what = "is" if _literal(host) is not None else "resolves to"
        raise CallbackUrlRefused(
            "callback-url-forbidden",
            f"callbackUrl {what} a private or reserved address ({refused.address})",
        ) from None


def pinned_target(url: str, allowed_networks: Iterable[IPNetwork] = ()) -> Target:
    """Check a callback URL at connect time; return the first address it may connect to."""
    host, port = parse_callback_url(url)
    addresses = checked_addresses(host, port, allowed_networks)
    return Target(scheme=urlsplit(url).scheme.lower(), host=host, port=port, address=addresses[0])


# --- connect-time guard -------------------------------------------------------------------


def _open_checked_socket(conn: HTTPConnection, allowed: tuple[IPNetwork, ...]) -> socket.socket:
    # `_dns_host` keeps a trailing dot (an absolute name that skips the search domains); the
    # `host` property strips it for the Host header, SNI and certificate matching.
    dns_host: str = getattr(conn, "_dns_host", conn.host)
    port = conn.port
    addresses = checked_addresses(dns_host, port, allowed)
    deadline = http_deadline.current()
    error: Exception | None = None
    for address in addresses:
        timeout = conn.timeout
        if deadline is not None:
            if deadline.remaining() <= 0:
                raise ConnectTimeoutError(conn, f"No time left to connect to {conn.host}")
            timeout = min(timeout, deadline.remaining()) if timeout else deadline.remaining()
        try:
            sock = urllib3_connection.create_connection(
                (str(address), port),
                timeout,
                source_address=conn.source_address,
                socket_options=conn.socket_options,
            )
        except TimeoutError as exc:
            error = ConnectTimeoutError(
                conn, f"Connection to {conn.host} ({address}) timed out ({conn.timeout})"
            )
            error.__cause__ = exc
        except OSError as exc:
            error = NewConnectionError(conn, f"Failed to connect to {conn.host} ({address}): {exc}")
            error.__cause__ = exc
        else:
            http_deadline.watch(sock)
            return sock
    assert error is not None  # noqa: S101  (addresses is not empty)
    raise error


class _HeldToDeadline:
    """Hands the socket of every request, new or reused from the pool, to the deadline."""

    sock: socket.socket | None

    def request(self, *args: Any, **kwargs: Any) -> None:
        http_deadline.watch(self.sock)
        super().request(*args, **kwargs)  # type: ignore[misc]

    def getresponse(self) -> Any:
        # After a TLS handshake `sock` is the SSLSocket that the response is read from.
        http_deadline.watch(self.sock)
        return super().getresponse()  # type: ignore[misc]


class GuardedHTTPConnection(_HeldToDeadline, HTTPConnection):
    """An HTTP connection that connects only to checked addresses."""

    def __init__(
        self, *args: Any, allowed_networks: tuple[IPNetwork, ...] = (), **kwargs: Any
    ) -> None:
        self.allowed_networks = allowed_networks
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        return _open_checked_socket(self, self.allowed_networks)


class GuardedHTTPSConnection(_HeldToDeadline, HTTPSConnection):
    """An HTTPS connection that connects only to checked addresses; TLS still names the host."""

    def __init__(
        self, *args: Any, allowed_networks: tuple[IPNetwork, ...] = (), **kwargs: Any
    ) -> None:
        self.allowed_networks = allowed_networks
        super().__init__(*args, **kwargs)

    def _new_conn(self) -> socket.socket:
        return _open_checked_socket(self, self.allowed_networks)


class GuardedPoolManager(PoolManager):
    """A pool manager whose pools open only guarded connections."""

    def __init__(
        self, *args: Any, allowed_networks: tuple[IPNetwork, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.allowed_networks = allowed_networks

    def _new_pool(
        self,
        scheme: str,
        host: str,
        port: int,
        request_context: dict[str, Any] | None = None,
    ) -> HTTPConnectionPool:
        # urllib3 documents _new_pool as the place to customise the pools it creates.
        pool = super()._new_pool(scheme, host, port, request_context)
        pool.ConnectionCls = GuardedHTTPSConnection if scheme == "https" else GuardedHTTPConnection
        pool.conn_kw["allowed_networks"] = self.allowed_networks
        return pool


class GuardedAdapter(HTTPAdapter):
    """A requests transport that applies the SSRF guard to every connection it opens."""

    __attrs__ = [*HTTPAdapter.__attrs__, "allowed_networks"]  # noqa: RUF012  (requests' own name)

    def __init__(self, allowed_networks: Iterable[IPNetwork] = (), **kwargs: Any) -> None:
        self.allowed_networks = tuple(allowed_networks)
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        self.poolmanager = GuardedPoolManager(
            num_pools=connections,
            maxsize=maxsize,
            block=block,
            allowed_networks=self.allowed_networks,
            **pool_kwargs,
        )

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        # A proxy resolves the name itself, past our guard: callbacks never use one.
        raise CallbackUrlRefused("callback-url-proxy", "callbacks are never sent through a proxy")
