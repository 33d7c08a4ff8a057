"""Who may drive the intake from a browser: the Host and Origin rules (pure, no I/O).

Without a token (the loopback default) anything that can reach the port can use the API, and
the operator's own browser can reach loopback. A web page cannot read answers from another
origin, but it can send requests there (CSRF: a form or a `fetch` with a `text/plain` body),
and with DNS rebinding (its own name re-pointed at 127.0.0.1) its requests even count as same
origin for the browser. Two checks close both:

- Host: the name the client used must be the daemon's own: the listen address, a loopback name
  for a loopback or wildcard listen (`localhost`, `127.0.0.1`, `[::1]`, with the port), any IP
  literal for a wildcard listen, or a name in `intake.allowed_hosts`. A rebinding page's
  requests carry its own name, so they fail here. Any Host goes on a unix socket, which no
  browser reaches by itself.
- Origin: browsers send it on every cross-origin request (and every POST); it must be the
  origin the request was addressed to (a page the daemon served itself, such as a console),
  or one of `intake.allowed_hosts`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_WILDCARDS = frozenset({"0.0.0.0", "::"})


def split_authority(value: str) -> tuple[str, int | None] | None:
    """(host, port or None) of a Host header value or `host[:port]`, normalised (lower case,
    IPv6 without brackets, no trailing dot); None when it is not one."""
    value = value.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[1:end], value[end + 1 :]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            return None
        if rest and not rest.startswith(":"):
            return None
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = value.rpartition(":")
        if not sep:
            host, port_text = value, None
        else:
            port_text = port_text_raw
        if ":" in host:  # an IPv6 address without brackets is not a Host
            return None
    if host.endswith("."):  # the fully qualified spelling of the same name
        host = host[:-1]
    if not host:
        return None
    if port_text is None:
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return None
    return host, int(port_text)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class HostPolicy:
    """Where the intake listens, and the extra names it answers to.

    `listen_host`/`port`: the bound TCP address (None for a unix socket). `allowed`:
    `intake.allowed_hosts`, each `host` (any port) or `host:port`.
    """

    listen_host: str | None
    port: int | None
    allowed: tuple[str, ...] = ()

    def _configured(self, host: str, port: int | None) -> bool:
        for entry in self.allowed:
            parsed = split_authority(entry)
            if parsed is None:
                continue
            name, entry_port = parsed
            if name == host and (entry_port is None or entry_port == port):
                return True
        return False

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this Host header (None: none sent) may be served."""
        if self.listen_host is None or header is None:
            # A unix socket; or no Host at all, which no browser sends.
            return True
        parsed = split_authority(header)
        if parsed is None:
            return False
        host, port = parsed
        if self._configured(host, port):
            return True
        if (port if port is not None else 80) != self.port:
            return False
        listen = split_authority(self.listen_host)
        listen_host = listen[0] if listen is not None else self.listen_host.lower()
        if host == listen_host:
            return True
        wildcard = listen_host in _WILDCARDS
        if (wildcard or _is_loopback(listen_host)) and _is_loopback(host):
            return True
        return wildcard and _is_ip(host)

    def origin_allowed(self, origin: str, host_header: str | None) -> bool:
        """Whether a request carrying `Origin: origin` may be served: same origin as the
        address it was sent to, or a configured name."""
        if origin.strip().lower() == "null":  # sandboxed frames, file:// pages, redirects
            return False
        try:
            parts = urlsplit(origin.strip())
            scheme = parts.scheme.lower()
            port = parts.port
        except ValueError:
            return False
        if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
            return False
        parsed = split_authority(parts.netloc.rpartition("@")[2])
        if parsed is None:
            return False
        host = parsed[0]
        port = port if port is not None else _DEFAULT_PORTS[scheme]
        if self._configured(host, port):
            return True
        if host_header is None:
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            return self.listen_host is not None and self.host_allowed(authority)
        target = split_authority(host_header)
        if target is None:
            return False
        target_port = target[1] if target[1] is not None else _DEFAULT_PORTS[scheme]
        return (host, port) == (target[0], target_port)


__all__ = ["HostPolicy", "split_authority"]
