"""The daemon's configuration: parsed once, at the edge, into frozen typed objects.

`load_config` reads the YAML file (contract section 3), substitutes `${VAR}` / `${VAR:-default}`
from the environment, reads `X_file` secrets (from `$CREDENTIALS_DIRECTORY` first), validates
every key with pydantic models and converts the result into the dataclasses below, whose fields
carry their units (`timeout_s`). This is the only module that reads the environment for config.

Every problem found is reported at once, each with its YAML path and line, in one ConfigError.
No secret value ever appears in an error message or in the repr of a config object.

The steps live in their own modules: `config_env` (`${VAR}` and `X_file`), `config_schema`
(the pydantic models and their messages), `config_problems` (collecting located problems).
This one holds the config objects, the public entry points and the builder joining them.
"""

from __future__ import annotations

import dataclasses
import hmac
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import SecretStr

from watcher.config.dburl import redact_url
from watcher.config.durations import format_duration
from watcher.config.env import SecretFiles, substitute
from watcher.config.problems import Problems
from watcher.config.schema import (
    DEFAULT_BASE_URL,
    DEFAULT_LEASE_S,
    DEFAULT_LISTEN,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_RETENTION_S,
    DEFAULT_RETRY_SCHEDULE_S,
    POLLING_FIELDS,
    DeliverySection,
    EndpointSection,
    IntakeSection,
    LoggingSection,
    MirrorS3Section,
    MirrorSection,
    PollingSection,
    RootSection,
    Section,
    StoreSection,
    UpstreamSection,
    is_loopback,
    parse_listen,
    parse_mirror_target,
    validate_section,
)
from watcher.config.yamlsrc import YamlPath, load_yaml_collecting
from watcher.errors import ConfigError, ConfigProblem
from watcher.models import DEFAULT_EVENTS, EventType

# The DEFAULT_* constants are the file's defaults, so they live with the schema (which must not
# import this module); they stay importable from here.
__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_LEASE_S",
    "DEFAULT_LISTEN",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_RETENTION_S",
    "DEFAULT_RETRY_SCHEDULE_S",
    "LEASE_PER_UPSTREAM_TIMEOUT",
    "STORE_FILE_NAME",
    "AdaptiveSettings",
    "Config",
    "DeliveryConfig",
    "EndpointConfig",
    "IntakeConfig",
    "LoggingConfig",
    "MirrorConfig",
    "PollingConfig",
    "PollingPolicy",
    "S3Config",
    "Secret",
    "StoreConfig",
    "UpstreamConfig",
    "load_config",
    "load_intake_config",
    "parse_config",
    "summary",
]

STORE_FILE_NAME = "watcher.db"
# With store.url, store.lease must be at least this many upstream.timeouts: an instance stops
# polling two thirds into a lease it could not renew (watcher/cluster/plan.py FENCE_FRACTION),
# and a poll started just before must end within the last third.
LEASE_PER_UPSTREAM_TIMEOUT = 3

_S = TypeVar("_S", bound=Section)


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
class AdaptiveSettings:
    """How the adaptive strategy learns and spends (`polling.adaptive`, contract section 8)."""

    min_samples: int = 20  # finished tasks of a model before its learned schedule is used
    window: int = 1000  # the most recent finished tasks it learns from
    polls_per_task: float | None = None  # None: auto (what `fixed` would spend)
    min_interval_s: float = 0.5  # never poll one task more often than this


@dataclass(frozen=True, slots=True)
class PollingPolicy:
    """How one model's tasks are polled (contract sections 5 and 8)."""

    initial_delay_s: float = 0.0
    initial_interval_s: float = 2.0
    max_interval_s: float = 30.0
    backoff: float = 1.5
    jitter: float = 0.1
    deadline_s: float = 6 * 3600.0
    not_found_grace_s: float = 120.0
    strategy: str = "fixed"  # "fixed" or "adaptive"
    adaptive: AdaptiveSettings = AdaptiveSettings()

    @property
    def adaptive_enabled(self) -> bool:
        return self.strategy == "adaptive"


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
    """The APIXO status API: where it is, the key, the global request budget, and how large an
    answer is read at most."""

    base_url: str  # without a trailing slash
    api_key: Secret
    timeout_s: float = 10.0
    max_concurrency: int = 32
    max_requests_per_second: float = 20.0
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """Where the store lives: a SQLite file (`path`) or a PostgreSQL database (`url`, a secret:
    its password must not show), never both. Finished tasks older than `retention_s` are purged
    (0: never); `lease_s` is how long an instance's claims last without renewal (PostgreSQL)."""

    path: Path | None
    retention_s: float = DEFAULT_RETENTION_S
    url: Secret | None = None
    lease_s: float = DEFAULT_LEASE_S

    @property
    def location(self) -> str:
        """Where the store is, for people and logs: the file, or the URL without its password."""
        if self.url is not None:
            return redact_url(self.url.reveal())
        return str(self.path)


@dataclass(frozen=True, slots=True)
class IntakeConfig:
    """The intake HTTP API: a TCP address (`host`, `port`) or a unix socket (`unix_path`)."""

    listen: str = DEFAULT_LISTEN  # as configured
    host: str | None = "127.0.0.1"
    port: int | None = 8787
    unix_path: Path | None = None
    token: Secret | None = None
    max_body_bytes: int = 65536
    allowed_hosts: tuple[str, ...] = ()  # lower-case host or host:port, besides `listen`
    idle_timeout_s: float = 15.0  # no request in flight (idle, or headers still arriving)
    body_timeout_s: float = 10.0  # the whole request body
    hint_token: Secret | None = None  # enables POST /v1/hints/apixo


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
class S3Config:
    """An S3-compatible service: where it is (None: AWS) and the credentials (None: the
    client's usual chain). Both keys are Secrets, so neither shows in a repr or a log."""

    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """Result mirroring (contract section 9): the target is a directory (`directory`) or an
    S3 bucket and key prefix (`bucket`, `prefix`), never both."""

    target: str  # as configured: file://DIR or s3://bucket/prefix
    directory: Path | None = None
    bucket: str | None = None
    prefix: str = ""  # without slashes at its ends
    s3: S3Config = field(default_factory=S3Config)
    public_base_url: str | None = None  # without a trailing slash
    max_file_bytes: int = 2 * 1024**3
    max_concurrency: int = 4
    timeout_s: float = 600.0  # per file, retries included
    retention_s: float = 30 * 86400.0  # 0: kept forever


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
    mirror: MirrorConfig | None = None  # None: result files are not mirrored

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
    data = substitute(data, (), environ, problems)
    config = _Builder(problems, environ, base_dir).build(data)
    return problems.checked(config, source)


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
    raw = substitute(raw, ("intake",), env, problems) if raw is not None else {}
    if not isinstance(raw, dict):
        problems.add(("intake",), "must be a mapping of keys to values")
        raise ConfigError(problems.result(), source=str(path))
    intake = _Builder(problems, env, file.parent).intake(raw)
    return problems.checked(intake, str(path))


def summary(config: Config) -> str:
    """The one line `check-config` prints for a valid config. Shows no secret."""
    return (
        f"config OK: {_count(len(config.endpoints), 'endpoint')}, "
        f"{_count(len(config.polling.models), 'model override')}, "
        f"intake {config.intake.listen}, store {config.store.location}"
    )


# Shown by `run` (and the daemon) for a config with store.url until the daemon runs on it.
def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _read(path: str | Path) -> tuple[Path, str]:
    file = Path(path).absolute()
    try:
        return file, file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        problem = ConfigProblem("", None, f"cannot read the config file: {reason}")
        raise ConfigError([problem], source=str(path)) from exc


def _document(text: str, source: str) -> tuple[dict[str, Any], Problems]:
    data, lines, duplicates = load_yaml_collecting(text, source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        problem = ConfigProblem("", lines.line_for(()), "must be a mapping of sections")
        raise ConfigError([problem], source=source)
    return data, Problems(lines, duplicates)


def _secret(value: SecretStr) -> Secret:
    return Secret(value.get_secret_value())


def _optional_secret(value: SecretStr | None) -> Secret | None:
    return _secret(value) if value is not None else None


class _Builder:
    """Validates each section on its own, so a mistake in one does not hide those in another."""

    def __init__(self, problems: Problems, environ: Mapping[str, str], base_dir: Path) -> None:
        self._problems = problems
        self._environ = environ
        self._base_dir = base_dir
        self._secret_files = SecretFiles(problems, environ, base_dir)

    def build(self, data: dict[str, Any]) -> Config | None:
        root, bad = self._validate(RootSection, data, ())
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
        mirror_ok, mirror = (False, None) if "mirror" in bad else self._mirror(root.mirror or {})
        if (
            bad
            or upstream is None
            or polling is None
            or store is None
            or intake is None
            or endpoints is None
            or delivery is None
            or logging is None
            or not mirror_ok
            or not self._check_lease(store, upstream, root.store or {})
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
            mirror=mirror,
        )

    def _validate(
        self, model: type[_S], raw: object, path: YamlPath, *, also_known: Sequence[str] = ()
    ) -> tuple[_S | None, frozenset[str]]:
        """The section at `path`, its `X_file` secrets read, validated (see validate_section)."""
        if isinstance(raw, dict):
            raw = self._secret_files.inline(raw, model.file_keys, path)
        return validate_section(model, raw, path, self._problems, also_known=also_known)

    def _path(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self._base_dir / path

    def _upstream(self, raw: dict[str, Any]) -> UpstreamConfig | None:
        model, failed = self._validate(UpstreamSection, raw, ("upstream",))
        if model is None:
            return None
        missing = self._missing(model, ("upstream",), failed, "api_key")
        if missing or failed or model.api_key is None:
            return None
        return UpstreamConfig(
            base_url=model.base_url.rstrip("/"),
            api_key=_secret(model.api_key),
            timeout_s=model.timeout,
            max_concurrency=model.max_concurrency,
            max_requests_per_second=model.max_requests_per_second,
            max_response_bytes=model.max_response_bytes,
        )

    def _polling(self, raw: dict[str, Any]) -> PollingConfig | None:
        path: YamlPath = ("polling",)
        raw = dict(raw)
        overrides = raw.pop("models", None) or {}
        model, failed = self._validate(PollingSection, raw, path, also_known=["models"])
        if model is None:
            return None
        default, ok = self._merge(PollingPolicy(), model, path, failed)
        if not isinstance(overrides, dict):
            self._problems.add((*path, "models"), "must be a mapping of model name to overrides")
            return None
        policies: dict[str, PollingPolicy] = {}
        for name, override_raw in overrides.items():
            where = (*path, "models", str(name))
            override, override_failed = self._validate(PollingSection, override_raw or {}, where)
            if override is None:
                ok = False
                continue
            policy, merged = self._merge(default, override, where, failed | override_failed)
            ok = ok and merged and not override_failed
            policies[str(name)] = policy
        return PollingConfig(default=default, models=MappingProxyType(policies)) if ok else None

    def _merge(
        self, base: PollingPolicy, model: PollingSection, path: YamlPath, failed: frozenset[str]
    ) -> tuple[PollingPolicy, bool]:
        """`model`'s keys over `base`, and whether the result is valid (if not, it is reported)."""
        given = model.model_dump(exclude_none=True)
        strategy = given.pop("strategy", base.strategy)
        adaptive = self._merge_adaptive(base.adaptive, given.pop("adaptive", {}))
        policy = dataclasses.replace(
            base,
            strategy=strategy,
            adaptive=adaptive,
            **{POLLING_FIELDS[k]: v for k, v in given.items()},
        )
        adaptive_ok = self._check_adaptive(policy, model, path, failed)
        if failed & {"initial_interval", "max_interval"}:
            return policy, False  # reported already; comparing with a stand-in would mislead
        if policy.max_interval_s >= policy.initial_interval_s:
            return policy, not failed and adaptive_ok
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

    @staticmethod
    def _merge_adaptive(base: AdaptiveSettings, given: dict[str, Any]) -> AdaptiveSettings:
        changes: dict[str, Any] = {}
        for key in ("min_samples", "window"):
            if key in given:
                changes[key] = given[key]
        if "polls_per_task" in given:
            ppt = given["polls_per_task"]
            changes["polls_per_task"] = None if ppt == "auto" else float(ppt)
        if "min_interval" in given:
            changes["min_interval_s"] = given["min_interval"]
        return dataclasses.replace(base, **changes)

    def _check_adaptive(
        self, policy: PollingPolicy, model: PollingSection, path: YamlPath, failed: frozenset[str]
    ) -> bool:
        """The adaptive settings against each other and against max_interval (reported)."""
        if failed & {"adaptive", "max_interval"}:
            return True  # reported already
        given = model.adaptive.model_dump(exclude_none=True) if model.adaptive else {}
        settings, ok = policy.adaptive, True
        if settings.window < settings.min_samples:
            if "window" in given:
                key, message = "window", f"must be at least min_samples ({settings.min_samples})"
            else:
                key, message = "min_samples", f"must be at most window ({settings.window})"
            self._problems.add((*path, "adaptive", key), message)
            ok = False
        # (a fixed schedule may poll faster than min_interval: it applies to adaptive only)
        if policy.adaptive_enabled and settings.min_interval_s > policy.max_interval_s:
            if "min_interval" in given:
                maximum = format_duration(policy.max_interval_s)
                key, message = "min_interval", f"must be at most max_interval ({maximum})"
                self._problems.add((*path, "adaptive", key), message)
            else:
                minimum = format_duration(settings.min_interval_s)
                message = f"must be at least adaptive.min_interval ({minimum})"
                self._problems.add((*path, "max_interval"), message)
            ok = False
        return ok

    def _check_lease(
        self, store: StoreConfig, upstream: UpstreamConfig, raw_store: Mapping[str, Any]
    ) -> bool:
        """Several instances: polls stop two thirds into a lease without renewal, and the rest
        of it is what a poll in flight has to end before another instance may poll its task.
        Shown at whichever of the two was set (the lease if both)."""
        needed = LEASE_PER_UPSTREAM_TIMEOUT * upstream.timeout_s
        if store.url is None or store.lease_s >= needed:
            return True
        if "lease" in raw_store:
            self._problems.add(
                ("store", "lease"),
                f"must be at least 3 x upstream.timeout ({format_duration(needed)}): a poll "
                "in flight must end before another instance may take its task over",
            )
        else:
            limit = format_duration(store.lease_s / LEASE_PER_UPSTREAM_TIMEOUT)
            self._problems.add(
                ("upstream", "timeout"),
                f"must be at most a third of store.lease ({limit}) with store.url: a poll in "
                "flight must end before another instance may take its task over",
            )
        return False

    def _store(self, raw: dict[str, Any]) -> StoreConfig | None:
        model, failed = self._validate(StoreSection, raw, ("store",))
        if model is None:
            return None
        if model.path is not None and model.url is not None:
            key = "url_file" if "url_file" in raw else "url"
            self._problems.add(
                ("store", key), f"give either path (SQLite) or {key} (PostgreSQL), not both"
            )
            return None
        if failed:
            return None
        url = _secret(model.url) if model.url is not None else None
        if url is not None:
            path = None
        elif model.path is not None:
            path = self._path(model.path)
        else:
            # The default is "${STATE_DIRECTORY:-./var}/watcher.db": systemd's StateDirectory=.
            path = self._path(self._environ.get("STATE_DIRECTORY") or "./var") / STORE_FILE_NAME
        return StoreConfig(path=path, retention_s=model.retention, url=url, lease_s=model.lease)

    def intake(self, raw: dict[str, Any]) -> IntakeConfig | None:
        """The intake section alone (`load_intake_config` needs nothing else)."""
        model, failed = self._validate(IntakeSection, raw, ("intake",))
        if model is None:
            return None
        host, port, unix = parse_listen(model.listen)
        exposed = host is not None and not is_loopback(host)
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
            token=_optional_secret(model.token),
            max_body_bytes=model.max_body_bytes,
            allowed_hosts=tuple(dict.fromkeys(model.allowed_hosts)),
            idle_timeout_s=model.idle_timeout,
            body_timeout_s=model.body_timeout,
            hint_token=_optional_secret(model.hint_token),
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
        model, failed = self._validate(EndpointSection, raw, path)
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
            secrets=tuple(_secret(s) for s in secrets),
            events=frozenset(model.events) if model.events is not None else DEFAULT_EVENTS,
            timeout_s=model.timeout,
            headers=MappingProxyType(dict(model.headers)),
        )

    def _delivery(self, raw: dict[str, Any]) -> DeliveryConfig | None:
        model, failed = self._validate(DeliverySection, raw, ("delivery",))
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
            callback_secret=_optional_secret(secret),
        )

    def _missing(self, model: Section, path: YamlPath, failed: frozenset[str], *keys: str) -> bool:
        """Report each required key of `keys` that is not given; True if any is missing."""
        missing = [k for k in keys if getattr(model, k) is None and k not in failed]
        for key in missing:
            also = f" (or {key}_file)" if key in model.file_keys else ""
            self._problems.add((*path, key), f"is required{also}")
        return bool(missing)

    def _mirror(self, raw: dict[str, Any]) -> tuple[bool, MirrorConfig | None]:
        """(valid, the mirror config or None when it is off)."""
        path: YamlPath = ("mirror",)
        model, failed = self._validate(MirrorSection, raw, path)
        if model is None:
            return False, None
        s3: S3Config | None = S3Config()
        if model.s3 is not None:
            s3 = self._s3(model.s3)
        if failed or s3 is None:
            return False, None
        if model.target is None:
            if model.s3 is not None or model.public_base_url is not None:
                self._problems.add((*path, "target"), "is required when mirror has other keys")
                return False, None
            return True, None
        kind, where, prefix = parse_mirror_target(model.target)
        if kind == "file" and model.s3 is not None:
            self._problems.add((*path, "s3"), "is only for an s3:// target")
            return False, None
        return True, MirrorConfig(
            target=model.target,
            directory=self._path(where) if kind == "file" else None,
            bucket=where if kind == "s3" else None,
            prefix=prefix,
            s3=s3,
            public_base_url=model.public_base_url.rstrip("/") if model.public_base_url else None,
            max_file_bytes=model.max_file_bytes,
            max_concurrency=model.max_concurrency,
            timeout_s=model.timeout,
            retention_s=model.retention,
        )

    def _s3(self, raw: object) -> S3Config | None:
        model, failed = self._validate(MirrorS3Section, raw, ("mirror", "s3"))
        if model is None or failed:
            return None
        if (model.access_key_id is None) != (model.secret_access_key is None):
            key = "secret_access_key" if model.secret_access_key is None else "access_key_id"
            self._problems.add(
                ("mirror", "s3", key),
                "is required with the other key (give both access_key_id and "
                "secret_access_key, or neither)",
            )
            return None
        return S3Config(
            endpoint_url=model.endpoint_url.rstrip("/") if model.endpoint_url else None,
            region=model.region,
            access_key_id=_optional_secret(model.access_key_id),
            secret_access_key=_optional_secret(model.secret_access_key),
        )

    def _logging(self, raw: dict[str, Any]) -> LoggingConfig | None:
        model, failed = self._validate(LoggingSection, raw, ("logging",))
        if model is None or failed:
            return None
        return LoggingConfig(format=model.format, level=model.level)
