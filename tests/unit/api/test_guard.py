"""The Host and Origin rules of the intake, as tables of cases."""

from __future__ import annotations

import pytest

from watcher.api.guard import HostPolicy, split_authority

LOOPBACK = HostPolicy("127.0.0.1", 8787)
LOOPBACK_V6 = HostPolicy("::1", 8787)
WILDCARD = HostPolicy("0.0.0.0", 8787)
INTERFACE = HostPolicy("10.0.0.5", 8787, allowed=("watcher.internal", "proxy.example.com:443"))
UNIX = HostPolicy(None, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8787", ("127.0.0.1", 8787)),
        ("LocalHost:8787", ("localhost", 8787)),
        ("localhost.:8787", ("localhost", 8787)),
        ("example.com", ("example.com", None)),
        ("[::1]:8787", ("::1", 8787)),
        ("[0:0::1]", ("::1", None)),
        ("::1", None),  # IPv6 needs brackets in a Host
        ("[::1", None),
        ("[nope]:1", None),
        ("host:0", None),
        ("host:65536", None),
        ("host:8x", None),
        ("", None),
        (":8787", None),
    ],
)
def test_split_authority(value: str, expected: tuple[str, int | None] | None) -> None:
    assert split_authority(value) == expected


@pytest.mark.parametrize(
    ("policy", "host", "allowed"),
    [
        (LOOPBACK, "127.0.0.1:8787", True),
        (LOOPBACK, "localhost:8787", True),
        (LOOPBACK, "[::1]:8787", True),
        (LOOPBACK, "127.0.0.2:8787", True),  # all of 127/8 is this machine
        (LOOPBACK, "127.0.0.1:9999", False),  # another port: another service
        (LOOPBACK, "127.0.0.1", False),  # port 80
        (LOOPBACK, "evil.example:8787", False),  # DNS rebinding
        (LOOPBACK, "localhost.evil.example:8787", False),
        (LOOPBACK, "garbage[", False),
        (LOOPBACK, None, True),  # no Host: not a browser
        (LOOPBACK_V6, "[::1]:8787", True),
        (LOOPBACK_V6, "localhost:8787", True),
        (WILDCARD, "192.0.2.7:8787", True),  # any address of the machine
        (WILDCARD, "[2001:db8::1]:8787", True),
        (WILDCARD, "localhost:8787", True),
        (WILDCARD, "watcher.internal:8787", False),  # a name must be configured
        (INTERFACE, "10.0.0.5:8787", True),
        (INTERFACE, "127.0.0.1:8787", False),  # not where it listens
        (INTERFACE, "watcher.internal:8787", True),
        (INTERFACE, "watcher.internal", True),  # a name without a port matches any port
        (INTERFACE, "proxy.example.com:443", True),
        (INTERFACE, "proxy.example.com", False),  # that entry names its port
        (UNIX, "anything.example:1", True),
    ],
)
def test_host_allowed(policy: HostPolicy, host: str | None, allowed: bool) -> None:
    assert policy.host_allowed(host) is allowed


@pytest.mark.parametrize(
    ("policy", "origin", "host", "allowed"),
    [
        (LOOPBACK, "http://127.0.0.1:8787", "127.0.0.1:8787", True),  # a page it served
        (LOOPBACK, "http://localhost:8787", "localhost:8787", True),
        (LOOPBACK, "http://localhost:8787", "127.0.0.1:8787", False),  # another origin
        (LOOPBACK, "https://evil.example", "127.0.0.1:8787", False),  # CSRF
        (LOOPBACK, "http://127.0.0.1:3000", "127.0.0.1:8787", False),  # another local app
        (LOOPBACK, "null", "127.0.0.1:8787", False),
        (LOOPBACK, "file://", "127.0.0.1:8787", False),
        (LOOPBACK, "http://127.0.0.1:8787/path", "127.0.0.1:8787", False),
        (LOOPBACK, "http://127.0.0.1:99999", "127.0.0.1:8787", False),
        (LOOPBACK, "http://127.0.0.1:8787", None, True),
        (LOOPBACK, "http://evil.example:8787", None, False),
        (INTERFACE, "https://proxy.example.com", "proxy.example.com:443", True),
        (INTERFACE, "https://watcher.internal", "10.0.0.5:8787", True),  # configured
        (UNIX, "http://console.example", "console.example", True),  # via a proxy, same origin
        (UNIX, "http://evil.example", "console.example", False),
    ],
)
def test_origin_allowed(policy: HostPolicy, origin: str, host: str | None, allowed: bool) -> None:
    assert policy.origin_allowed(origin, host) is allowed
