"""PostgreSQL URLs (`store.url`): what is accepted, and how one is shown without its password.

A URL's password may sit in its user part (`postgresql://user:PASSWORD@host/db`) or in its
query (`?password=PASSWORD`, and `sslpassword` for the client key). `redact_url` removes them,
for check-config, logs and errors; `url_passwords` lists them, so a message that quotes one
anyway can be scrubbed. A password pasted without percent-encoding its `@ / ? #` is refused:
those split the URL elsewhere than intended (and elsewhere than libpq does), so no redaction
could find the whole password in it.
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit

SCHEMES = ("postgresql", "postgres")
HIDDEN = "***"
SECRET_KEYS = ("password", "sslpassword")  # query parameters holding a secret
NOT_ENCODED = (
    "has an '@', '/', '?' or '#' in its user name, password or database name that must be "
    "percent-encoded (%40, %2F, %3F, %23; and '%' as %25)"
)


def _split_elsewhere(parts: SplitResult) -> bool:
    """Whether `parts` look like a user part holding an unencoded `@ / ? #`: an '@' that is not
    the one ending the user part (two of them, or one past the host), which libpq would read
    differently (it takes the first '@', Python the last)."""
    if parts.netloc.count("@") > 1 or "@" in parts.path or "@" in parts.fragment:
        return True
    # `?pa?ss@host/db`: a query part that is no key=value but holds an '@'.
    return any("@" in item.partition("=")[0] for item in parts.query.split("&"))


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
    if _split_elsewhere(parts):
        return NOT_ENCODED
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
    found += [value for key, value in parse_qsl(parts.query) if key in SECRET_KEYS]
    return [p for p in dict.fromkeys(found) if p]


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***: safe to print and log."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"postgresql://{HIDDEN}"
    if _split_elsewhere(parts):
        return f"{parts.scheme}://{HIDDEN}"  # where the password ends cannot be told
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + HIDDEN
    netloc = f"{userinfo}@{hosts}" if at else hosts
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(key in SECRET_KEYS for key, _ in pairs):
        query = urlencode([(k, HIDDEN if k in SECRET_KEYS else v) for k, v in pairs], safe="*")
    # Not urlunsplit: it drops the "//" of an empty host (a unix socket given in the query).
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")
