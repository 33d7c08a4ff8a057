"""The config file's schema: its keys, their defaults and checks, and problems in plain words.

One pydantic model per section, each validated on its own so a mistake in one section does not
hide those in another. Required keys are declared optional here and checked by the builder
in `watcher.config.settings`, so a section with a missing key still validates far enough for its
other keys to be checked too. Pydantic's errors are rewritten into short messages ("must be at
least 1", "unknown key 'timout'; did you mean 'timeout'?") reported through `Problems`; inputs
are never echoed, so no secret reaches a message.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from watcher.config.dburl import check_postgres_url
from watcher.config.durations import parse_duration
from watcher.config.problems import Problems
from watcher.config.sizes import format_size, parse_size
from watcher.config.yamlsrc import YamlPath, looks_secret
from watcher.errors import InvalidSecret
from watcher.models import EventType
from watcher.webhook_secret import SECRET_PREFIX, decode_secret

DEFAULT_BASE_URL = "https://api.apixo.ai/api/v1"
DEFAULT_LISTEN = "127.0.0.1:8787"
# A status answer is a small envelope, but a success carries its resultJson: room for large ones.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
MIN_MAX_RESPONSE_BYTES = 1024
DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


# --- single-value validators (used inside the pydantic models) --------------------------------


def _custom(kind: str, message: str) -> PydanticCustomError:
    # The message is passed as a template argument so braces in it are never interpreted.
    return PydanticCustomError(kind, "{message}", {"message": message})


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _custom("duration", str(exc)) from None


def _size(value: object) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise _custom("size", str(exc)) from None


def _at_least(minimum: int) -> AfterValidator:
    def check(value: int) -> int:
        if value < minimum:
            raise _custom("too_small", f"must be at least {format_size(minimum)}")
        return value

    return AfterValidator(check)


def _no_bool(value: object) -> object:
    if isinstance(value, bool):
        raise _custom("number_type", "must be a number, not true/false")
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _empty_is_none(value: object) -> object:
    return None if value == "" else value


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise _custom("url", "must be an http:// or https:// URL with a host")
    if any(c.isspace() for c in value):
        raise _custom("url", "must not contain spaces")
    return value


_Text = TypeVar("_Text", str, SecretStr)


def _not_empty(value: _Text) -> _Text:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not text.strip():
        raise _custom("empty", "must not be empty")
    return value


def _header_safe(value: SecretStr | None) -> SecretStr | None:
    # A key or token goes into an Authorization header: a stray line break (a pasted file's
    # newline) would make every request fail instead of the config.
    if value is not None and any(ord(c) < 32 or ord(c) == 127 for c in value.get_secret_value()):
        raise _custom("control_character", "must not contain control characters (a line break?)")
    return value


def _webhook_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    try:
        if not raw.startswith(SECRET_PREFIX):
            raise InvalidSecret()
        decode_secret(raw)
    except InvalidSecret:
        raise _custom(
            "webhook_secret",
            "must be a webhook secret: 'whsec_' followed by base64 "
            "(make one with `apixo-watcher gen-secret`)",
        ) from None
    return value


_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _endpoint_name(value: str) -> str:
    if not _ENDPOINT_NAME.fullmatch(value):
        raise _custom(
            "endpoint_name",
            "must start with a letter or digit and contain only letters, digits, '_', '.', '-'",
        )
    return value


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Set by the watcher itself, or framing that the HTTP client must own.
_RESERVED_HEADERS = frozenset(
    {"content-type", "user-agent", "content-length", "transfer-encoding", "host", "connection"}
)


def _header_name(value: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise _custom("header_name", "is not a valid HTTP header name")
    lower = value.lower()
    if lower in _RESERVED_HEADERS or lower.startswith("webhook-"):
        raise _custom("header_name", f"'{value}' is set by the watcher and cannot be configured")
    return value


def _header_value(value: str) -> str:
    if any(c in value for c in "\r\n"):
        raise _custom("header_value", "must not contain line breaks")
    # aiohttp refuses to send any other control character but a tab: every attempt would fail.
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        raise _custom("header_value", "must not contain control characters")
    return value


_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_CALLBACK_HOST = re.compile(rf"(?:(?:{_LABEL})(?:\.{_LABEL})*|\[([0-9a-f:.]+)\])(?::(\d{{1,5}}))?")


def _callback_host(value: str) -> str:
    host = value.strip().lower()
    match = _CALLBACK_HOST.fullmatch(host)
    ok = match is not None
    if match is not None and match.group(1) is not None:
        try:
            ipaddress.IPv6Address(match.group(1))
        except ValueError:
            ok = False
    if match is not None and match.group(2) is not None and not 1 <= int(match.group(2)) <= 65535:
        ok = False
    if not ok:
        raise _custom(
            "callback_host",
            "must be a bare host name like hooks.example.com, optionally with :port "
            "(no scheme, no path)",
        )
    return host


def parse_listen(value: str) -> tuple[str | None, int | None, str | None]:
    """(host, port, unix path) of an intake `listen` value; raises ValueError if it is none."""
    if value.startswith("unix:"):
        if not value[5:].strip():
            raise ValueError("needs a socket path after 'unix:'")
        return None, None, value[5:]
    host, sep, port_text = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("has an invalid IPv6 address in brackets") from None
    elif ":" in host:
        raise ValueError("needs brackets around an IPv6 address, like [::1]:8787")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError("must be HOST:PORT (like 127.0.0.1:8787) or unix:/path/to.sock")
    return host, int(port_text), None


def _postgres_url(value: SecretStr | None) -> SecretStr | None:
    problem = None if value is None else check_postgres_url(value.get_secret_value())
    if problem is not None:
        raise _custom("postgres_url", problem)
    return value


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError as exc:
        raise _custom("listen", str(exc)) from None
    return value


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an IP address) is only reachable from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the pydantic models: one per section, validated separately ------------------------------

# Finished tasks (with their events and delivery log) are kept this long; 0 keeps them forever.
DEFAULT_RETENTION_S = 30 * 86400.0
# How long an instance's claims on tasks and deliveries last without renewal (PostgreSQL).
DEFAULT_LEASE_S = 30.0
_Duration = Annotated[float, BeforeValidator(_duration)]
_PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
_Count = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
_HttpUrl = Annotated[str, AfterValidator(_http_url)]
_WebhookSecret = Annotated[SecretStr, AfterValidator(_webhook_secret)]
_OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_is_none)]
_OptionalWebhookSecret = Annotated[_WebhookSecret | None, BeforeValidator(_empty_is_none)]


class Section(BaseModel):
    """A config section: unknown keys rejected, inputs never echoed in errors."""

    # Required keys are declared optional and checked by the builder, so a section with a
    # missing key still validates far enough for its other keys to be checked too.
    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False
    )

    # Secret keys X that may be given as `X_file: PATH` instead.
    file_keys: ClassVar[tuple[str, ...]] = ()


class RootSection(Section):
    """The top level: each section is validated on its own, later."""

    upstream: dict[str, Any] | None = None
    polling: dict[str, Any] | None = None
    store: dict[str, Any] | None = None
    intake: dict[str, Any] | None = None
    tasks_file: str | None = None
    endpoints: list[Any] | None = None
    delivery: dict[str, Any] | None = None
    logging: dict[str, Any] | None = None
    mirror: dict[str, Any] | None = None


class UpstreamSection(Section):
    """`upstream`: the APIXO status API. `api_key` is required."""

    file_keys = ("api_key",)

    base_url: _HttpUrl = DEFAULT_BASE_URL
    api_key: (
        Annotated[SecretStr, AfterValidator(_not_empty), AfterValidator(_header_safe)] | None
    ) = None  # required
    timeout: _PositiveDuration = 10.0
    max_concurrency: _Count = 32
    max_requests_per_second: Annotated[float, BeforeValidator(_no_bool), Field(gt=0)] = 20.0
    max_response_bytes: Annotated[
        int, BeforeValidator(_size), _at_least(MIN_MAX_RESPONSE_BYTES)
    ] = DEFAULT_MAX_RESPONSE_BYTES


def _polls_per_task(value: object) -> str | float:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        if value < 1:
            raise _custom("polls_per_task", "must be at least 1 (or auto)")
        return float(value)
    raise _custom("polls_per_task", "must be auto or a number of requests (at least 1)")


class AdaptiveSection(Section):
    """`polling.adaptive` (and a model's override of it), all optional."""

    min_samples: _Count | None = None
    window: _Count | None = None
    polls_per_task: Annotated[str | float, BeforeValidator(_polls_per_task)] | None = None
    min_interval: _PositiveDuration | None = None


class PollingSection(Section):
    """Every polling key, all optional: the defaults and each model's partial override."""

    strategy: Annotated[Literal["fixed", "adaptive"], BeforeValidator(_lower)] | None = None
    adaptive: AdaptiveSection | None = None
    initial_delay: _Duration | None = None
    initial_interval: _PositiveDuration | None = None
    max_interval: _PositiveDuration | None = None
    backoff: Annotated[float, BeforeValidator(_no_bool), Field(ge=1)] | None = None
    jitter: Annotated[float, BeforeValidator(_no_bool), Field(ge=0, lt=1)] | None = None
    deadline: _PositiveDuration | None = None
    not_found_grace: _Duration | None = None


# YAML key -> PollingPolicy field (`strategy` and `adaptive` are merged on their own).
POLLING_FIELDS = {
    "initial_delay": "initial_delay_s",
    "initial_interval": "initial_interval_s",
    "max_interval": "max_interval_s",
    "backoff": "backoff",
    "jitter": "jitter",
    "deadline": "deadline_s",
    "not_found_grace": "not_found_grace_s",
}


class StoreSection(Section):
    """`store`: the SQLite file (`path`) or a PostgreSQL database (`url`), how long finished
    tasks are kept, and how long an instance's claims last (`lease`, PostgreSQL)."""

    file_keys = ("url",)

    path: Annotated[str, AfterValidator(_not_empty)] | None = None
    url: Annotated[_OptionalSecret, AfterValidator(_postgres_url)] = None
    lease: _PositiveDuration = DEFAULT_LEASE_S
    retention: _Duration = DEFAULT_RETENTION_S


class IntakeSection(Section):
    """`intake`: the HTTP API that accepts tasks to watch."""

    file_keys = ("token", "hint_token")

    listen: Annotated[str, AfterValidator(_listen)] = DEFAULT_LISTEN
    token: Annotated[_OptionalSecret, AfterValidator(_header_safe)] = None
    hint_token: _OptionalSecret = None
    max_body_bytes: Annotated[int, BeforeValidator(_no_bool), Field(ge=1024)] = 65536
    # A connection without a request in flight (idle, or still sending its headers) is closed
    # after idle_timeout; a request body must arrive within body_timeout.
    idle_timeout: _PositiveDuration = 15.0
    body_timeout: _PositiveDuration = 10.0
    # Names (host or host:port) the intake also answers to besides its listen address, e.g.
    # the name a reverse proxy forwards: the Host and Origin checks refuse any other.
    allowed_hosts: list[Annotated[str, AfterValidator(_callback_host)]] = Field(
        default_factory=list
    )


class EndpointSection(Section):
    """One item of `endpoints`. `name`, `url` and a secret are required."""

    file_keys = ("secret", "secrets")

    name: Annotated[str, AfterValidator(_endpoint_name)] | None = None  # required
    url: _HttpUrl | None = None  # required
    secret: _WebhookSecret | None = None
    secrets: Annotated[list[_WebhookSecret], Field(min_length=1)] | None = None
    events: Annotated[list[EventType], Field(min_length=1)] | None = None
    timeout: _PositiveDuration = 10.0
    headers: dict[
        Annotated[str, AfterValidator(_header_name)], Annotated[str, AfterValidator(_header_value)]
    ] = Field(default_factory=dict)


class DeliverySection(Section):
    """`delivery`: retries and ad-hoc callback URLs."""

    file_keys = ("callback_secret",)

    retry_schedule: Annotated[list[_Duration], Field(min_length=1)] = list(DEFAULT_RETRY_SCHEDULE_S)
    max_concurrency: _Count = 16
    allowed_callback_hosts: list[Annotated[str, AfterValidator(_callback_host)]] = Field(
        default_factory=list
    )
    callback_secret: _OptionalWebhookSecret = None


DEFAULT_MIRROR_MAX_FILE_BYTES = 2 * 1024**3
DEFAULT_MIRROR_TIMEOUT_S = 600.0
DEFAULT_MIRROR_RETENTION_S = 30 * 86400.0
_S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_TARGET_HINT = "must be file://DIRECTORY or s3://BUCKET/PREFIX"


def parse_mirror_target(value: str) -> tuple[str, str, str]:
    """(kind, where, prefix) of a `mirror.target`: ("file", directory, "") or ("s3", bucket,
    prefix without slashes at its ends). Raises ValueError (never repeating the value)."""
    if any(c.isspace() or ord(c) < 32 for c in value):
        raise ValueError(f"{_TARGET_HINT}, without spaces")
    if value.startswith("file://"):
        directory = value.removeprefix("file://")
        if not directory:
            raise ValueError(f"{_TARGET_HINT}: the directory is missing")
        return "file", directory, ""
    if value.startswith("s3://"):
        bucket, _, prefix = value.removeprefix("s3://").partition("/")
        if not _S3_BUCKET.fullmatch(bucket) or ".." in bucket:
            raise ValueError(
                "must name an S3 bucket after s3:// (3-63 lower-case letters, digits, '.', '-')"
            )
        return "s3", bucket, prefix.strip("/")
    raise ValueError(_TARGET_HINT)


def _mirror_target(value: str) -> str:
    try:
        parse_mirror_target(value)
    except ValueError as exc:
        raise _custom("mirror_target", str(exc)) from None
    return value


class MirrorS3Section(Section):
    """`mirror.s3`: where the S3-compatible service is and the credentials for it (none given:
    the client's usual chain, e.g. an instance role)."""

    file_keys = ("access_key_id", "secret_access_key")

    endpoint_url: _HttpUrl | None = None
    region: Annotated[str, AfterValidator(_not_empty)] | None = None
    access_key_id: Annotated[_OptionalSecret, AfterValidator(_header_safe)] = None
    secret_access_key: Annotated[_OptionalSecret, AfterValidator(_header_safe)] = None


class MirrorSection(Section):
    """`mirror`: copies of result files kept before the upstream's URLs expire (contract
    section 9). Absent, or without `target`: off."""

    target: Annotated[str, AfterValidator(_mirror_target)] | None = None
    s3: dict[str, Any] | None = None  # validated as MirrorS3Section
    public_base_url: _HttpUrl | None = None
    max_file_bytes: Annotated[int, BeforeValidator(_size), _at_least(1)] = (
        DEFAULT_MIRROR_MAX_FILE_BYTES
    )
    max_concurrency: _Count = 4
    timeout: _PositiveDuration = DEFAULT_MIRROR_TIMEOUT_S
    retention: _Duration = DEFAULT_MIRROR_RETENTION_S


class LoggingSection(Section):
    """`logging`: format and level."""

    format: Annotated[Literal["json", "console"] | None, BeforeValidator(_lower)] = None
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"


_M = TypeVar("_M", bound=Section)


def validate_section(
    model: type[_M],
    raw: object,
    path: YamlPath,
    problems: Problems,
    *,
    also_known: Sequence[str] = (),
) -> tuple[_M | None, frozenset[str]]:
    """The section at `path` validated as `model`, and the keys that failed (each reported).

    With failures, the model is the section without the failed keys, so checks across
    keys still run on the rest and every problem is found in one go; or None when even
    that does not validate (a required key is missing, or it is not a mapping at all).
    `also_known` are keys handled elsewhere, offered as "did you mean" suggestions too.
    """
    try:
        return model.model_validate(raw), frozenset()
    except ValidationError as exc:
        failed: set[str] = set()
        for error in exc.errors(include_url=False):
            loc = _loc(error)
            problems.add((*path, *loc), _message(error, model, also_known))
            if loc:
                failed.add(str(loc[0]))
    if not isinstance(raw, dict):
        return None, frozenset(failed)
    try:
        rest = {k: v for k, v in raw.items() if k not in failed}
        return model.model_validate(rest), frozenset(failed)
    except ValidationError:
        return None, frozenset(failed)


# --- pydantic errors in words a person reads -----------------------------------------------

_SIMPLE_MESSAGES = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "list_type": "must be a list",
    "dict_type": "must be a mapping of keys to values",
    "model_type": "must be a mapping of keys to values",
    "model_attributes_type": "must be a mapping of keys to values",
    "missing": "is required",
}


def _loc(error: ErrorDetails) -> YamlPath:
    return tuple(part for part in error["loc"] if part != "[key]")


def _message(error: ErrorDetails, model: type[Section], also_known: Sequence[str] = ()) -> str:
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        if looks_secret(key):  # a secret pasted where a key goes: the line points at it
            return "unknown key (not repeated here: it looks like a secret)"
        model = _nested(model, _loc(error)[:-1])
        known = [*model.model_fields, *(f"{k}_file" for k in model.file_keys), *also_known]
        return f"unknown key '{key}'" + _did_you_mean(key, known)
    if kind in _SIMPLE_MESSAGES:
        return _SIMPLE_MESSAGES[kind]
    if kind == "string_type":
        if isinstance(value, int | float | bool):
            return "must be a string (put the value in quotes)"
        return "must be a string"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", ""))
        hint = ""
        if isinstance(value, str):
            hint = _did_you_mean(value, re.findall(r"'([^']*)'", expected))
        return f"must be {expected}{hint}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        words = {"gt": "greater than", "ge": "at least", "lt": "less than", "le": "at most"}
        bound, limit = next((k, v) for k, v in ctx.items() if k in words)
        return f"must be {words[bound]} {limit}"
    if kind == "too_short":
        return "must not be empty"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"].replace("Input should be", "must be")


def _nested(model: type[Section], loc: YamlPath) -> type[Section]:
    """The section model at `loc` inside `model` (e.g. `adaptive` inside `polling`)."""
    for part in loc:
        field = model.model_fields.get(str(part))
        inner = getattr(field, "annotation", None) if field is not None else None
        candidates = [inner, *getattr(inner, "__args__", ())]
        found = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, Section)), None
        )
        if found is None:
            return model
        model = found
    return model


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""
