"""PostgreSQL URLs (`store.url`): what is accepted, and how one is shown without its password.

A URL's password may sit in its user part (`postgresql://user:PASSWORD@host/db`) or in its
query (`?password=PASSWORD`). `redact_url` removes both, for check-config, logs and errors;
`url_passwords` lists them, so a message that quotes one anyway can be scrubbed.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

SCHEMES = ("postgresql", "postgres")
HIDDEN = "***"


def check_postgres_url(value: str) -> str | None:
    """Why `value` is not a usable PostgreSQL URL, or None if it is. Never quotes the value."""
    if any(c.isspace() or ord(c) < 32 for c in value):
        return "must not contain spaces or line breaks"
    try:
        parts = urlsplit(value)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in SCHEMES:
        return "must be a postgresql:// URL, like postgresql://watcher@db.example.com/watcher"
    if not parts.path.strip("/"):
        return "must name the database, like postgresql://watcher@db.example.com/watcher"
    return None


def url_passwords(url: str) -> list[str]:
    """The password(s) in `url`, as written and decoded, for scrubbing messages."""
    found: list[str] = []
    try:
        parts = urlsplit(url)
    except ValueError:
        return found
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        raw = userinfo.split(":", 1)[1]
        found += [raw, unquote(raw)]
    found += [value for key, value in parse_qsl(parts.query) if key == "password"]
    return [p for p in dict.fromkeys(found) if p]


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***: safe to print and log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"postgresql://{HIDDEN}"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + HIDDEN
    netloc = f"{userinfo}@{hosts}" if at else hosts
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key == "password" for key, _ in pairs):
        query = urlencode([(k, HIDDEN if k == "password" else v) for k, v in pairs], safe="*")
    # Not urlunsplit: it drops the "//" of an empty host (a unix socket given in the query).
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
