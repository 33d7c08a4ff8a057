"""The daemon's configuration: parsed once, at the edge, into frozen typed objects.

`load_config` reads the YAML file (contract section 3), substitutes `${VAR}` / `${VAR:-default}`
from the environment, reads `X_file` secrets (from `$CREDENTIALS_DIRECTORY` first), validates
every key with pydantic models and converts the result into the dataclasses below, whose fields
carry their units (`timeout_s`). This is the only module that reads the environment for config.

Every problem found is reported at once, each with its YAML path and line, in one ConfigError.
No secret value ever appears in an error message or in the repr of a config object.
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
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

from watcher.durations import format_duration, parse_duration
from watcher.errors import ConfigError, ConfigProblem, InvalidSecret
from watcher.models import DEFAULT_EVENTS, EventType
from watcher.signing import SECRET_PREFIX, decode_secret
from watcher.yamlsrc import LineMap, YamlPath, format_path, load_yaml_collecting

DEFAULT_BASE_URL = "https://api.apixo.ai/api/v1"
DEFAULT_LISTEN = "127.0.0.1:8787"
DEFAULT_RETRY_SCHEDULE_S = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
STORE_FILE_NAME = "watcher.db"


class Secret:
    """A secret string (API key, webhook secret, token) that does not show itself.

    `str()` and `repr()` give asterisks, so a secret in a log line or a printed config object
    stays hidden; `reveal()` is the one deliberate way to the value.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value itself, for the one place that needs it (a header, an HMAC key)."""
        return self._value

    def __repr__(self) -> str:
        return "**********"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True, slots=True)
class PollingPolicy:
    """How one model's tasks are polled (contract section 5)."""

    initial_delay_s: float = 0.0
    initial_interval_s: float = 2.0
    max_interval_s: float = 30.0
    backoff: float = 1.5
    jitter: float = 0.1
    deadline_s: float = 6 * 3600.0
    not_found_grace_s: float = 120.0


@dataclass(frozen=True, slots=True)
class PollingConfig:
    """The default polling policy and the merged per-model ones."""

    default: PollingPolicy = field(default_factory=PollingPolicy)
    models: Mapping[str, PollingPolicy] = field(default_factory=lambda: MappingProxyType({}))

    def for_model(self, model: str) -> PollingPolicy:
        """The policy for `model`: its override merged onto the default, or the default."""
        return self.models.get(model, self.default)


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """The APIXO status API: where it is, the key, and the global request budget."""

    base_url: str  # without a trailing slash
    api_key: Secret
    timeout_s: float = 10.0
    max_concurrency: int = 32
    max_requests_per_second: float = 20.0


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the SQLite store lives."""

    path: Path


@dataclass(frozen=True, slots=True)
class IntakeConfig:
    """The intake HTTP API: a TCP address (`host`, `port`) or a unix socket (`unix_path`)."""

    listen: str = DEFAULT_LISTEN  # as configured
    host: str | None = "127.0.0.1"
    port: int | None = 8787
    unix_path: Path | None = None
    token: Secret | None = None
    max_body_bytes: int = 65536


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """A webhook receiver. `secrets[0]` is the newest; every secret signs (rotation)."""

    name: str
    url: str
    secrets: tuple[Secret, ...]
    events: frozenset[EventType] = DEFAULT_EVENTS
    timeout_s: float = 10.0
    # Static headers may carry credentials of their own (Authorization), so repr leaves them out.
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)


@dataclass(frozen=True, slots=True)
class DeliveryConfig:
    """How webhooks are retried, and where ad-hoc `callback_url`s may point."""

    retry_schedule_s: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE_S
    max_concurrency: int = 16
    allowed_callback_hosts: tuple[str, ...] = ()  # lower-case host or host:port
    callback_secret: Secret | None = None


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    """Log format (None: json unless stdout is a TTY) and level."""

    format: str | None = None
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration. `source` is the file it was loaded from, if any."""

    upstream: UpstreamConfig
    polling: PollingConfig
    store: StoreConfig
    intake: IntakeConfig
    tasks_file: Path | None
    endpoints: tuple[EndpointConfig, ...]
    delivery: DeliveryConfig
    logging: LoggingConfig
    source: Path | None = None

    def endpoint(self, name: str) -> EndpointConfig | None:
        """The endpoint called `name`, if one is configured."""
        return next((e for e in self.endpoints if e.name == name), None)


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read and validate the config file at `path`. Raises ConfigError with every problem."""
    file, text = _read(path)
    env = os.environ if environ is None else environ
    config = parse_config(text, source=str(path), base_dir=file.parent, environ=env)
    return dataclasses.replace(config, source=file)


def parse_config(text: str, *, source: str, base_dir: Path, environ: Mapping[str, str]) -> Config:
    """Validate config YAML `text`; relative paths resolve against `base_dir`.

    `source` names the text in error messages. Raises ConfigError with every problem found.
    """
    data, problems = _document(text, source)
    data = _substitute(data, (), environ, problems)
    config = _Builder(problems, environ, base_dir).build(data)
    return _checked(config, problems, source)


def load_intake_config(
    path: str | Path, *, environ: Mapping[str, str] | None = None
) -> IntakeConfig:
    """Only the `intake` section of the config file at `path`: what client commands need.

    The rest of the file is not validated, so `apixo-watcher list` works in a shell that lacks
    the daemon's API key and secrets. Raises ConfigError for problems in that section.
    """
    file, text = _read(path)
    env = os.environ if environ is None else environ
    data, problems = _document(text, str(path))
    raw = data.get("intake")
    raw = _substitute(raw, ("intake",), env, problems) if raw is not None else {}
    if not isinstance(raw, dict):
        problems.add(("intake",), "must be a mapping of keys to values")
        raise ConfigError(problems.result(), source=str(path))
    intake = _Builder(problems, env, file.parent).intake(raw)
    return _checked(intake, problems, str(path))


_C = TypeVar("_C")


def _read(path: str | Path) -> tuple[Path, str]:
    file = Path(path).absolute()
    try:
        return file, file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        problem = ConfigProblem("", None, f"cannot read the config file: {reason}")
        raise ConfigError([problem], source=str(path)) from exc


def _document(text: str, source: str) -> tuple[dict[str, Any], _Problems]:
    data, lines, duplicates = load_yaml_collecting(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problem = ConfigProblem("", lines.line_for(()), "must be a mapping of sections")
        raise ConfigError([problem], source=source)
    return data, _Problems(lines, duplicates)


def _checked(result: _C | None, problems: _Problems, source: str) -> _C:
    if result is None or problems:
        found = problems.result() or [ConfigProblem("", None, "the configuration is invalid")]
        raise ConfigError(found, source=source)
    return result


def summary(config: Config) -> str:
    """The one line `check-config` prints for a valid config. Shows no secret."""
    return (
        f"config OK: {_count(len(config.endpoints), 'endpoint')}, "
        f"{_count(len(config.polling.models), 'model override')}, "
        f"intake {config.intake.listen}, store {config.store.path}"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- problems -----------------------------------------------------------------------------


class _Problems:
    """Problems found so far, by raw path; turned into located ConfigProblems at the end.

    A value whose environment variable is unset (or whose secret file is unreadable) is
    "suppressed": that one problem is reported, not the follow-on ones about the empty value.
    A secret read from `X_file` is validated as `X`; its problems are shown at `X_file`.
    """

    def __init__(self, lines: LineMap, duplicates: list[ConfigProblem]) -> None:
        self._lines = lines
        self._located = list(duplicates)
        self._items: list[tuple[YamlPath, str, bool]] = []
        self._suppressed: set[YamlPath] = set()
        self._renamed: dict[YamlPath, YamlPath] = {}

    def __bool__(self) -> bool:
        return bool(self._located) or any(
            self._visible(p, primary) for p, _, primary in self._items
        )

    def add(self, path: YamlPath, message: str, *, primary: bool = False) -> None:
        self._items.append((path, message, primary))

    def suppress(self, path: YamlPath) -> None:
        self._suppressed.add(path)

    def rename(self, path: YamlPath, shown: YamlPath) -> None:
        self._renamed[path] = shown

    def result(self) -> list[ConfigProblem]:
        problems = list(self._located)
        for path, message, primary in self._items:
            if self._visible(path, primary):
                shown = self._shown(path)
                problems.append(ConfigProblem(format_path(shown), self._line(shown), message))
        return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.path))

    def _visible(self, path: YamlPath, primary: bool) -> bool:
        if primary:
            return True
        shown = self._shown(path)
        return not any(
            p[: len(s)] == s for s in self._suppressed for p in (path, shown) if len(p) >= len(s)
        )

    def _shown(self, path: YamlPath) -> YamlPath:
        for end in range(len(path), 0, -1):
            shown = self._renamed.get(path[:end])
            if shown is not None:
                return shown + path[end:]
        return path

    def _line(self, path: YamlPath) -> int | None:
        # A key missing from a missing section has no line of its own worth showing.
        if path and (path[0],) not in self._lines:
            return None
        return self._lines.line_for(path)


# --- environment substitution ---------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(value: Any, path: YamlPath, environ: Mapping[str, str], problems: _Problems) -> Any:
    if isinstance(value, str):
        return _expand(value, path, environ, problems)
    if isinstance(value, dict):
        return {
            k: _substitute(v, (*path, k if isinstance(k, str) else str(k)), environ, problems)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, (*path, i), environ, problems) for i, v in enumerate(value)]
    return value


def _expand(text: str, path: YamlPath, environ: Mapping[str, str], problems: _Problems) -> str:
    if "${" not in text:
        return text
    failed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal failed
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None and not value:  # `:-` also covers set-but-empty, as in the shell
            if "${" in default:
                problems.add(path, "a ${...} default cannot contain another ${...}", primary=True)
                failed = True
            return default
        if value is None:
            problems.add(path, f"environment variable {name} is not set", primary=True)
            failed = True
            return ""
        return value

    result = _ENV_REF.sub(replace, text)
    if "${" in _ENV_REF.sub("", text):
        problems.add(path, "has a '${' that is not ${NAME} or ${NAME:-default}", primary=True)
        failed = True
    if failed:
        problems.suppress(path)
    return result


# --- single-value validators (used inside the pydantic models) --------------------------------


def _custom(kind: str, message: str) -> PydanticCustomError:
    # The message is passed as a template argument so braces in it are never interpreted.
    return PydanticCustomError(kind, "{message}", {"message": message})


def _duration(value: object) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _custom("duration", str(exc)) from None


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


def _not_empty(value: str) -> str:
    if not value.strip():
        raise _custom("empty", "must not be empty")
    return value


def _not_empty_secret(value: SecretStr) -> SecretStr:
    if not value.get_secret_value().strip():
        raise _custom("empty", "must not be empty")
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
    if any(c in value for c in "\r\n\0"):
        raise _custom("header_value", "must not contain line breaks")
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


def _parse_listen(value: str) -> tuple[str | None, int | None, str | None]:
    """(host, port, unix path) of an intake `listen` value; raises ValueError."""
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


def _listen(value: str) -> str:
    try:
        _parse_listen(value)
    except ValueError as exc:
        raise _custom("listen", str(exc)) from None
    return value


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- the pydantic models: one per section, validated separately ------------------------------

_Duration = Annotated[float, BeforeValidator(_duration)]
_PositiveDuration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]
_Count = Annotated[int, BeforeValidator(_no_bool), Field(ge=1)]
_HttpUrl = Annotated[str, AfterValidator(_http_url)]
_WebhookSecret = Annotated[SecretStr, AfterValidator(_webhook_secret)]
_OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_is_none)]
_OptionalWebhookSecret = Annotated[_WebhookSecret | None, BeforeValidator(_empty_is_none)]


class _Section(BaseModel):
    # Required keys are declared optional and checked by the builder, so a section with a
    # missing key still validates far enough for its other keys to be checked too.
    model_config = ConfigDict(
        extra="forbid", frozen=True, hide_input_in_errors=True, allow_inf_nan=False
    )

    # Secret keys X that may be given as `X_file: PATH` instead.
    file_keys: ClassVar[tuple[str, ...]] = ()


class _Root(_Section):
    upstream: dict[str, Any] | None = None
    polling: dict[str, Any] | None = None
    store: dict[str, Any] | None = None
    intake: dict[str, Any] | None = None
    tasks_file: str | None = None
    endpoints: list[Any] | None = None
    delivery: dict[str, Any] | None = None
    logging: dict[str, Any] | None = None


class _Upstream(_Section):
    file_keys = ("api_key",)

    base_url: _HttpUrl = DEFAULT_BASE_URL
    api_key: Annotated[SecretStr, AfterValidator(_not_empty_secret)] | None = None  # required
    timeout: _PositiveDuration = 10.0
    max_concurrency: _Count = 32
    max_requests_per_second: Annotated[float, BeforeValidator(_no_bool), Field(gt=0)] = 20.0


class _Polling(_Section):
    """Every polling key, all optional: the defaults and each model's partial override."""

    initial_delay: _Duration | None = None
    initial_interval: _PositiveDuration | None = None
    max_interval: _PositiveDuration | None = None
    backoff: Annotated[float, BeforeValidator(_no_bool), Field(ge=1)] | None = None
    jitter: Annotated[float, BeforeValidator(_no_bool), Field(ge=0, lt=1)] | None = None
    deadline: _PositiveDuration | None = None
    not_found_grace: _Duration | None = None


# YAML key -> PollingPolicy field.
_POLLING_FIELDS = {
    "initial_delay": "initial_delay_s",
    "initial_interval": "initial_interval_s",
    "max_interval": "max_interval_s",
    "backoff": "backoff",
    "jitter": "jitter",
    "deadline": "deadline_s",
    "not_found_grace": "not_found_grace_s",
}


class _Store(_Section):
    path: Annotated[str, AfterValidator(_not_empty)] | None = None


class _Intake(_Section):
    file_keys = ("token",)

    listen: Annotated[str, AfterValidator(_listen)] = DEFAULT_LISTEN
    token: _OptionalSecret = None
    max_body_bytes: Annotated[int, BeforeValidator(_no_bool), Field(ge=1024)] = 65536


class _Endpoint(_Section):
    file_keys = ("secret",)

    name: Annotated[str, AfterValidator(_endpoint_name)] | None = None  # required
    url: _HttpUrl | None = None  # required
    secret: _WebhookSecret | None = None
    secrets: Annotated[list[_WebhookSecret], Field(min_length=1)] | None = None
    events: Annotated[list[EventType], Field(min_length=1)] | None = None
    timeout: _PositiveDuration = 10.0
    headers: dict[
        Annotated[str, AfterValidator(_header_name)], Annotated[str, AfterValidator(_header_value)]
    ] = Field(default_factory=dict)


class _Delivery(_Section):
    file_keys = ("callback_secret",)

    retry_schedule: Annotated[list[_Duration], Field(min_length=1)] = list(DEFAULT_RETRY_SCHEDULE_S)
    max_concurrency: _Count = 16
    allowed_callback_hosts: list[Annotated[str, AfterValidator(_callback_host)]] = Field(
        default_factory=list
    )
    callback_secret: _OptionalWebhookSecret = None


class _Logging(_Section):
    format: Annotated[Literal["json", "console"] | None, BeforeValidator(_lower)] = None
    level: Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_lower)] = "info"


_M = TypeVar("_M", bound=_Section)


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


def _message(error: ErrorDetails, model: type[_Section], also_known: Sequence[str] = ()) -> str:
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
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


def _did_you_mean(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


# --- building -------------------------------------------------------------------------------


class _Builder:
    """Validates each section on its own, so a mistake in one does not hide those in another."""

    def __init__(self, problems: _Problems, environ: Mapping[str, str], base_dir: Path) -> None:
        self._problems = problems
        self._environ = environ
        self._base_dir = base_dir

    def build(self, data: dict[str, Any]) -> Config | None:
        root, bad = self._validate(_Root, data, ())
        if root is None:
            return None
        # A section of the wrong shape is reported once, not once more per missing key in it.
        upstream = None if "upstream" in bad else self._upstream(root.upstream or {})
        polling = None if "polling" in bad else self._polling(root.polling or {})
        store = None if "store" in bad else self._store(root.store or {})
        intake = None if "intake" in bad else self.intake(root.intake or {})
        endpoints = None if "endpoints" in bad else self._endpoints(root.endpoints or [])
        delivery = None if "delivery" in bad else self._delivery(root.delivery or {})
        logging = None if "logging" in bad else self._logging(root.logging or {})
        if (
            bad
            or upstream is None
            or polling is None
            or store is None
            or intake is None
            or endpoints is None
            or delivery is None
            or logging is None
        ):
            return None
        return Config(
            upstream=upstream,
            polling=polling,
            store=store,
            intake=intake,
            tasks_file=self._path(root.tasks_file) if root.tasks_file else None,
            endpoints=endpoints,
            delivery=delivery,
            logging=logging,
        )

    def _validate(
        self, model: type[_M], raw: object, path: YamlPath, *, also_known: Sequence[str] = ()
    ) -> tuple[_M | None, frozenset[str]]:
        """The validated section and the keys that failed (each reported).

        With failures, the model is the section without the failed keys, so checks across
        keys still run on the rest and every problem is found in one go; or None when even
        that does not validate (a required key is missing, or it is not a mapping at all).
        """
        if isinstance(raw, dict):
            raw = self._read_files(model, raw, path)
        try:
            return model.model_validate(raw), frozenset()
        except ValidationError as exc:
            failed: set[str] = set()
            for error in exc.errors(include_url=False):
                loc = _loc(error)
                self._problems.add((*path, *loc), _message(error, model, also_known))
                if loc:
                    failed.add(str(loc[0]))
        if not isinstance(raw, dict):
            return None, frozenset(failed)
        try:
            rest = {k: v for k, v in raw.items() if k not in failed}
            return model.model_validate(rest), frozenset(failed)
        except ValidationError:
            return None, frozenset(failed)

    def _read_files(
        self, model: type[_Section], raw: dict[str, Any], path: YamlPath
    ) -> dict[str, Any]:
        """Replace each `X_file: PATH` by `X: <the file's content>`."""
        raw = dict(raw)
        for key in model.file_keys:
            file_key = f"{key}_file"
            if file_key not in raw:
                continue
            file_path = (*path, file_key)
            file_value = raw.pop(file_key)
            if key in raw:
                self._problems.add(file_path, f"give either {key} or {file_key}, not both")
                continue
            self._problems.rename((*path, key), file_path)
            if not isinstance(file_value, str) or not file_value.strip():
                self._problems.add(file_path, "must be the path of a file")
                self._problems.suppress((*path, key))
                continue
            content = self._read_secret_file(file_value, file_path)
            if content is None:
                self._problems.suppress((*path, key))  # no "X is required" on top
                continue
            raw[key] = content
        return raw

    def _read_secret_file(self, name: str, where: YamlPath) -> str | None:
        file = Path(name)
        looked_in_credentials = False
        if not file.is_absolute():
            credentials = self._environ.get("CREDENTIALS_DIRECTORY")
            if credentials and (Path(credentials) / file).exists():
                file = Path(credentials) / file
            else:
                looked_in_credentials = bool(credentials)
                file = self._base_dir / file
        try:
            content = file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            also = " (not in $CREDENTIALS_DIRECTORY either)" if looked_in_credentials else ""
            message = f"cannot read {file}: {exc.strerror or 'error'}{also}"
            self._problems.add(where, message)
            return None
        except UnicodeDecodeError:
            self._problems.add(where, f"{file} is not UTF-8 text")
            return None
        if not content:
            self._problems.add(where, f"{file} is empty")
            return None
        return content

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def _upstream(self, raw: dict[str, Any]) -> UpstreamConfig | None:
        model, failed = self._validate(_Upstream, raw, ("upstream",))
        if model is None:
            return None
        missing = self._missing(model, ("upstream",), failed, "api_key")
        if missing or failed or model.api_key is None:
            return None
        return UpstreamConfig(
            base_url=model.base_url.rstrip("/"),
            api_key=Secret(model.api_key.get_secret_value()),
            timeout_s=model.timeout,
            max_concurrency=model.max_concurrency,
            max_requests_per_second=model.max_requests_per_second,
        )

    def _polling(self, raw: dict[str, Any]) -> PollingConfig | None:
        path: YamlPath = ("polling",)
        raw = dict(raw)
        overrides = raw.pop("models", None) or {}
        model, failed = self._validate(_Polling, raw, path, also_known=["models"])
        if model is None:
            return None
        default, ok = self._merge(PollingPolicy(), model, path, failed)
        if not isinstance(overrides, dict):
            self._problems.add((*path, "models"), "must be a mapping of model name to overrides")
            return None
        policies: dict[str, PollingPolicy] = {}
        for name, override_raw in overrides.items():
            where = (*path, "models", str(name))
            override, override_failed = self._validate(_Polling, override_raw or {}, where)
            if override is None:
                ok = False
                continue
            policy, merged = self._merge(default, override, where, failed | override_failed)
            ok = ok and merged and not override_failed
            policies[str(name)] = policy
        return PollingConfig(default=default, models=MappingProxyType(policies)) if ok else None

    def _merge(
        self, base: PollingPolicy, model: _Polling, path: YamlPath, failed: frozenset[str]
    ) -> tuple[PollingPolicy, bool]:
        """`model`'s keys over `base`, and whether the result is valid (if not, it is reported)."""
        given = model.model_dump(exclude_none=True)
        policy = dataclasses.replace(base, **{_POLLING_FIELDS[k]: v for k, v in given.items()})
        if failed & {"initial_interval", "max_interval"}:
            return policy, False  # reported already; comparing with a stand-in would mislead
        if policy.max_interval_s >= policy.initial_interval_s:
            return policy, not failed
        if "max_interval" in given:
            initial = format_duration(policy.initial_interval_s)
            self._problems.add(
                (*path, "max_interval"), f"must be at least initial_interval ({initial})"
            )
        else:
            maximum = format_duration(policy.max_interval_s)
            self._problems.add(
                (*path, "initial_interval"), f"must be at most max_interval ({maximum})"
            )
        return policy, False

    def _store(self, raw: dict[str, Any]) -> StoreConfig | None:
        model, failed = self._validate(_Store, raw, ("store",))
        if model is None or failed:
            return None
        if model.path is not None:
            return StoreConfig(path=self._path(model.path))
        # The default is "${STATE_DIRECTORY:-./var}/watcher.db": systemd's StateDirectory=.
        state_dir = self._environ.get("STATE_DIRECTORY") or "./var"
        return StoreConfig(path=self._path(state_dir) / STORE_FILE_NAME)

    def intake(self, raw: dict[str, Any]) -> IntakeConfig | None:
        """The intake section alone (`load_intake_config` needs nothing else)."""
        model, failed = self._validate(_Intake, raw, ("intake",))
        if model is None:
            return None
        host, port, unix = _parse_listen(model.listen)
        exposed = host is not None and not _is_loopback(host)
        if exposed and model.token is None and not failed & {"listen", "token"}:
            self._problems.add(
                ("intake", "token"),
                "is required when intake.listen is not a loopback address or a unix socket",
            )
            return None
        if failed:
            return None
        return IntakeConfig(
            listen=model.listen,
            host=host,
            port=port,
            unix_path=self._path(unix) if unix is not None else None,
            token=Secret(model.token.get_secret_value()) if model.token is not None else None,
            max_body_bytes=model.max_body_bytes,
        )

    def _endpoints(self, items: list[Any]) -> tuple[EndpointConfig, ...] | None:
        seen: dict[str, int] = {}
        built: list[EndpointConfig] = []
        duplicate = False
        for index, raw in enumerate(items):
            path: YamlPath = ("endpoints", index)
            name = raw.get("name") if isinstance(raw, dict) else None
            if isinstance(name, str) and name in seen:
                self._problems.add(
                    (*path, "name"),
                    f"duplicate endpoint name (also used by endpoints[{seen[name]}])",
                )
                duplicate = True
            elif isinstance(name, str):
                seen[name] = index
            endpoint = self._endpoint(raw, path)
            if endpoint is not None:
                built.append(endpoint)
        return tuple(built) if len(built) == len(items) and not duplicate else None

    def _endpoint(self, raw: object, path: YamlPath) -> EndpointConfig | None:
        if not isinstance(raw, dict):
            self._problems.add(path, "must be a mapping with name, url and secret")
            return None
        model, failed = self._validate(_Endpoint, raw, path)
        if model is None:
            return None
        missing = self._missing(model, path, failed, "name", "url")
        secrets = [model.secret] if model.secret is not None else model.secrets
        if not failed & {"secret", "secrets"}:
            if model.secret is not None and model.secrets is not None:
                self._problems.add((*path, "secrets"), "give either secret or secrets, not both")
                return None
            if not secrets:
                self._problems.add(
                    (*path, "secret"), "is required (or secret_file, or secrets for rotation)"
                )
                return None
        if missing or failed or not secrets or model.name is None or model.url is None:
            return None
        return EndpointConfig(
            name=model.name,
            url=model.url,
            secrets=tuple(Secret(s.get_secret_value()) for s in secrets),
            events=frozenset(model.events) if model.events is not None else DEFAULT_EVENTS,
            timeout_s=model.timeout,
            headers=MappingProxyType(dict(model.headers)),
        )

    def _delivery(self, raw: dict[str, Any]) -> DeliveryConfig | None:
        model, failed = self._validate(_Delivery, raw, ("delivery",))
        if model is None:
            return None
        secret = model.callback_secret
        checkable = not failed & {"allowed_callback_hosts", "callback_secret"}
        if checkable and model.allowed_callback_hosts and secret is None:
            self._problems.add(
                ("delivery", "callback_secret"),
                "is required when allowed_callback_hosts is not empty "
                "(make one with `apixo-watcher gen-secret`)",
            )
            return None
        if failed:
            return None
        return DeliveryConfig(
            retry_schedule_s=tuple(model.retry_schedule),
            max_concurrency=model.max_concurrency,
            allowed_callback_hosts=tuple(dict.fromkeys(model.allowed_callback_hosts)),
            callback_secret=Secret(secret.get_secret_value()) if secret is not None else None,
        )

    def _missing(self, model: _Section, path: YamlPath, failed: frozenset[str], *keys: str) -> bool:
        """Report each required key of `keys` that is not given; True if any is missing."""
        missing = [k for k in keys if getattr(model, k) is None and k not in failed]
        for key in missing:
            also = f" (or {key}_file)" if key in model.file_keys else ""
            self._problems.add((*path, key), f"is required{also}")
        return bool(missing)

    def _logging(self, raw: dict[str, Any]) -> LoggingConfig | None:
        model, failed = self._validate(_Logging, raw, ("logging",))
        if model is None or failed:
            return None
        return LoggingConfig(format=model.format, level=model.level)
