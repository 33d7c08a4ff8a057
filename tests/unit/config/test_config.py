"""The config file (contract section 3): defaults, substitution, secrets files, every check.

Each problem a user can make must come back with the right YAML path and line, all at once,
in words a person reads, and without any secret in it.
"""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.yamlbomb import alias_bomb
from watcher.config.durations import format_duration, parse_duration
from watcher.config.settings import (
    AdaptiveSettings,
    Config,
    DeliveryConfig,
    EndpointConfig,
    IntakeConfig,
    LoggingConfig,
    PollingConfig,
    PollingPolicy,
    Secret,
    StoreConfig,
    UpstreamConfig,
    load_config,
    load_intake_config,
    parse_config,
    summary,
)
from watcher.config.yamlsrc import load_yaml
from watcher.errors import ConfigError, ConfigProblem
from watcher.models import DEFAULT_EVENTS, EventType

REPO = Path(__file__).resolve().parents[3]
WHSEC = "whsec_" + base64.b64encode(b"k" * 32).decode()
WHSEC_OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
ENV = {"APIXO_API_KEY": "apixo-key-0123", "APP_WEBHOOK_SECRET": WHSEC}
MINIMAL = "upstream:\n  api_key: the-key\n"


def parse(text: str, env: dict[str, str] | None = None, base_dir: Path = Path("/etc/w")) -> Config:
    return parse_config(
        textwrap.dedent(text), source="c.yaml", base_dir=base_dir, environ=env or {}
    )


def problems_of(
    text: str, env: dict[str, str] | None = None, base_dir: Path = Path("/etc/w")
) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse(text, env, base_dir)
    assert info.value.source == "c.yaml"
    return info.value.problems


def one_problem(text: str, env: dict[str, str] | None = None) -> ConfigProblem:
    problems = problems_of(text, env)
    assert len(problems) == 1, problems
    return problems[0]


def with_minimal(extra: str) -> str:
    return MINIMAL + textwrap.dedent(extra)


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("3s", 3.0),
        ("5m", 300.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("2m30s", 150.0),
        ("1h30m", 5400.0),
        (" 10s ", 10.0),
        ("30", 30.0),
        ("0.25", 0.25),
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, "must not be negative"),
        ("-5s", "must not be negative"),
        (-0.5, "must not be negative"),
        (True, "must be a duration like 500ms, 3s, 5m, 2h or a number of seconds"),
        ("", "must be a duration"),
        ("abc", "must be a duration"),
        ("5x", "must be a duration"),
        ("5 s", "must be a duration"),
        ("1e3", "must be a duration"),
        ("s", "must be a duration"),
        (None, "must be a duration"),
        ([1], "must be a duration"),
        (float("inf"), "must be a duration"),
        (float("nan"), "must be a duration"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.5, "500ms"),
        (0.0005, "0.5ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (150, "2m30s"),
        (3600, "1h"),
        (21600, "6h"),
        (90061.5, "1d1h1m1.5s"),
        (-2, "-2s"),
    ],
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    if seconds >= 0:
        assert parse_duration(text) == pytest.approx(seconds)


# --- the example files -----------------------------------------------------------------------


def test_the_example_config_loads_as_documented() -> None:
    config = load_config(REPO / "config.example.yaml", environ=ENV)
    assert config.source == REPO / "config.example.yaml"
    assert config.upstream == UpstreamConfig(
        base_url="https://api.apixo.ai/api/v1",
        api_key=Secret("apixo-key-0123"),
        timeout_s=10.0,
        max_concurrency=32,
        max_requests_per_second=20.0,
    )
    assert config.polling.default == PollingPolicy()
    assert config.polling.for_model("sora-2") == PollingPolicy(
        initial_interval_s=15.0, max_interval_s=60.0, deadline_s=12 * 3600.0
    )
    assert config.store.path == REPO / "var" / "watcher.db"
    assert config.intake.host == "127.0.0.1"
    assert config.intake.port == 8787
    assert config.intake.token is None
    assert config.tasks_file is None  # commented out: no tasks_file_missing on a first run
    [app] = config.endpoints
    assert app.name == "app"
    assert app.url == "http://127.0.0.1:9000/hooks/apixo"
    assert [s.reveal() for s in app.secrets] == [WHSEC]
    assert app.events == DEFAULT_EVENTS
    assert config.delivery.callback_secret is None
    assert config.logging == LoggingConfig(format="json", level="info")
    assert summary(config) == (
        "config OK: 1 endpoint, 1 model override, intake 127.0.0.1:8787, "
        f"store {REPO / 'var' / 'watcher.db'}"
    )


def test_the_example_config_needs_its_two_variables() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(REPO / "config.example.yaml", environ={})
    assert {(p.path, p.message) for p in info.value.problems} == {
        ("upstream.api_key", "environment variable APIXO_API_KEY is not set"),
        ("endpoints[0].secret", "environment variable APP_WEBHOOK_SECRET is not set"),
    }
    assert all(p.line for p in info.value.problems)


def test_the_example_config_under_systemd() -> None:
    env = {**ENV, "STATE_DIRECTORY": "/var/lib/apixo-watcher", "APIXO_WATCHER_TOKEN": "t0k"}
    config = load_config(REPO / "config.example.yaml", environ=env)
    assert config.store.path == Path("/var/lib/apixo-watcher/watcher.db")
    assert config.intake.token == Secret("t0k")


def test_the_example_tasks_file_lists_two_tasks() -> None:
    data, _ = load_yaml((REPO / "tasks.example.yaml").read_text(), "tasks.example.yaml")
    tasks = data["tasks"]
    assert len(tasks) == 2
    for task in tasks:
        assert isinstance(task["task_id"], str)
        assert isinstance(task["model"], str)
        assert isinstance(task["metadata"], dict)


# --- defaults --------------------------------------------------------------------------------


def test_every_default() -> None:
    config = parse(MINIMAL)
    assert config == Config(
        upstream=UpstreamConfig(
            base_url="https://api.apixo.ai/api/v1",
            api_key=Secret("the-key"),
            timeout_s=10.0,
            max_concurrency=32,
            max_requests_per_second=20.0,
            max_response_bytes=16 * 1024 * 1024,
        ),
        polling=PollingConfig(
            default=PollingPolicy(
                initial_delay_s=0.0,
                initial_interval_s=2.0,
                max_interval_s=30.0,
                backoff=1.5,
                jitter=0.1,
                deadline_s=6 * 3600.0,
                not_found_grace_s=120.0,
            ),
            models={},
        ),
        store=StoreConfig(path=Path("/etc/w/var/watcher.db")),
        intake=IntakeConfig(
            listen="127.0.0.1:8787",
            host="127.0.0.1",
            port=8787,
            unix_path=None,
            token=None,
            max_body_bytes=65536,
        ),
        tasks_file=None,
        endpoints=(),
        delivery=DeliveryConfig(
            retry_schedule_s=(0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0),
            max_concurrency=16,
            allowed_callback_hosts=(),
            callback_secret=None,
        ),
        logging=LoggingConfig(format=None, level="info"),
        source=None,
    )
    assert config.polling.for_model("anything") == config.polling.default
    assert summary(config) == (
        "config OK: 0 endpoints, 0 model overrides, intake 127.0.0.1:8787, "
        "store /etc/w/var/watcher.db"
    )


@pytest.mark.parametrize(
    ("value", "size"), [("500KiB", 500 * 1024), ("2GiB", 2 * 1024**3), ("65536", 65536)]
)
def test_max_response_bytes_takes_a_size(value: str, size: int) -> None:
    config = parse(f"upstream: {{api_key: k, max_response_bytes: {value}}}\n")
    assert config.upstream.max_response_bytes == size


def test_empty_sections_mean_defaults() -> None:
    config = parse(with_minimal("polling:\nintake:\nendpoints:\ndelivery: {}\nlogging:\n"))
    assert config.polling.default == PollingPolicy()
    assert config.endpoints == ()


def test_store_path_follows_state_directory() -> None:
    assert parse(MINIMAL, {"STATE_DIRECTORY": "/var/lib/w"}).store.path == Path(
        "/var/lib/w/watcher.db"
    )
    assert parse(MINIMAL, {"STATE_DIRECTORY": ""}).store.path == Path("/etc/w/var/watcher.db")


def test_store_retention() -> None:
    assert parse(MINIMAL).store.retention_s == 30 * 86400  # the default: 30 days
    assert parse(MINIMAL + "store: {retention: 7d}\n").store.retention_s == 7 * 86400
    assert parse(MINIMAL + "store: {path: x.db, retention: 0}\n").store.retention_s == 0
    problem = one_problem(MINIMAL + "store:\n  retention: forever\n")
    assert (problem.path, problem.line) == ("store.retention", 4)


@pytest.mark.parametrize(
    ("yaml_text", "store", "tasks"),
    [
        ("store: {path: db.sqlite}\ntasks_file: t.yaml\n", "/etc/w/db.sqlite", "/etc/w/t.yaml"),
        ("store: {path: ./d/x.db}\ntasks_file: ./in/t.yaml\n", "/etc/w/d/x.db", "/etc/w/in/t.yaml"),
        ("store: {path: /abs/x.db}\ntasks_file: /abs/t.yaml\n", "/abs/x.db", "/abs/t.yaml"),
        ("tasks_file: ${TASKS:-}\n", "/etc/w/var/watcher.db", None),
        ("tasks_file:\n", "/etc/w/var/watcher.db", None),
    ],
)
def test_relative_paths_resolve_against_the_config_directory(
    yaml_text: str, store: str, tasks: str | None
) -> None:
    config = parse(with_minimal(yaml_text))
    assert config.store.path == Path(store)
    assert config.tasks_file == (Path(tasks) if tasks else None)


def test_load_config_resolves_against_the_files_directory(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    file = tmp_path / "conf" / "c.yaml"
    file.write_text(MINIMAL + "tasks_file: tasks.yaml\n")
    config = load_config(file, environ={})
    assert config.tasks_file == tmp_path / "conf" / "tasks.yaml"
    assert config.store.path == tmp_path / "conf" / "var" / "watcher.db"
    assert config.source == file


def test_load_config_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml", environ={})
    [problem] = info.value.problems
    assert "cannot read the config file: No such file or directory" in problem.message


def test_load_config_refuses_an_alias_bomb_with_its_line(tmp_path: Path) -> None:
    # Eight levels of anchors under one key: 43 million values once expanded. Validation
    # took minutes per level and then ran out of memory; now it is refused unexpanded.
    bomb = alias_bomb(8, indent="    ")
    file = tmp_path / "c.yaml"
    file.write_text(MINIMAL + "endpoints:\n  - name: a\n    headers:\n" + bomb)
    with pytest.raises(ConfigError) as info:
        load_config(file, environ={})
    [problem] = info.value.problems
    assert problem.line == 7
    assert "aliases" in problem.message


def test_load_config_reads_os_environ_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHER_TEST_KEY", "from-os-environ")
    file = tmp_path / "c.yaml"
    file.write_text("upstream: {api_key: '${WATCHER_TEST_KEY}'}\n")
    assert load_config(file).upstream.api_key.reveal() == "from-os-environ"


# --- environment substitution ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${K}", {"K": "abc"}, "abc"),
        ("pre-${K}-post", {"K": "abc"}, "pre-abc-post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${K:-fallback}", {}, "fallback"),
        ("${K:-fallback}", {"K": ""}, "fallback"),  # as in the shell, empty counts as unset
        ("${K:-fallback}", {"K": "set"}, "set"),
        ("${K:-}x", {}, "x"),
        ("${K:-a b:c/d}", {}, "a b:c/d"),
        ("no reference $K or $", {}, "no reference $K or $"),
        ("${K}", {"K": "${NOT_AGAIN}"}, "${NOT_AGAIN}"),  # values are not expanded twice
    ],
)
def test_env_substitution(value: str, env: dict[str, str], expected: str) -> None:
    config = parse(f"upstream:\n  api_key: '{value}'\n", env)
    assert config.upstream.api_key.reveal() == expected


def test_substitution_happens_before_type_validation() -> None:
    config = parse(
        """\
        upstream:
          api_key: k
          max_concurrency: ${CONC}
          timeout: ${TIMEOUT:-2s}
        polling:
          jitter: ${JITTER}
        delivery:
          retry_schedule: [0s, "${FIRST_RETRY}"]
        """,
        {"CONC": "7", "JITTER": "0.2", "FIRST_RETRY": "1m"},
    )
    assert config.upstream.max_concurrency == 7
    assert config.upstream.timeout_s == 2.0
    assert config.polling.default.jitter == 0.2
    assert config.delivery.retry_schedule_s == (0.0, 60.0)


def test_an_unset_variable_is_one_problem_at_its_key() -> None:
    text = """\
        upstream:
          api_key: k
        delivery:
          allowed_callback_hosts: [hooks.example.com]
          callback_secret: ${APP_CALLBACK_SECRET}
        """
    assert one_problem(text) == ConfigProblem(
        "delivery.callback_secret", 5, "environment variable APP_CALLBACK_SECRET is not set"
    )


@pytest.mark.parametrize(
    "value",
    ["${UNCLOSED", "x ${1BAD}", "${A:-${B}}", "${}"],
)
def test_a_malformed_reference_is_a_problem(value: str) -> None:
    problem = one_problem(f"upstream:\n  api_key: '{value}'\n")
    assert problem.path == "upstream.api_key"
    assert problem.line == 2
    assert "${NAME}" in problem.message or "cannot contain another" in problem.message


# --- secrets from files ---------------------------------------------------------------------


def _secret_files(tmp_path: Path) -> tuple[Path, Path]:
    config_dir = tmp_path / "etc"
    credentials = tmp_path / "credentials"
    config_dir.mkdir()
    credentials.mkdir()
    (credentials / "key").write_text("  key-from-credentials\n")
    (config_dir / "key").write_text("key-from-config-dir\n")
    (config_dir / "only-here").write_text("\nonly-in-config-dir\n\n")
    (config_dir / "hook").write_text(WHSEC + "\n")
    (credentials / "callback").write_text(WHSEC_OLD)
    (credentials / "token").write_text("tok")
    return config_dir, credentials


def test_every_secret_key_may_come_from_a_file(tmp_path: Path) -> None:
    config_dir, credentials = _secret_files(tmp_path)
    config = parse(
        f"""\
        upstream:
          api_key_file: key
        intake:
          listen: 0.0.0.0:8787
          token_file: token
        endpoints:
          - name: app
            url: https://example.com/hook
            secret_file: {config_dir / "hook"}
        delivery:
          allowed_callback_hosts: [hooks.example.com]
          callback_secret_file: callback
        """,
        {"CREDENTIALS_DIRECTORY": str(credentials)},
        base_dir=config_dir,
    )
    assert config.upstream.api_key.reveal() == "key-from-credentials"  # credentials come first
    assert config.intake.token == Secret("tok")
    assert config.endpoints[0].secrets == (Secret(WHSEC),)
    assert config.delivery.callback_secret == Secret(WHSEC_OLD)


def test_a_relative_file_falls_back_to_the_config_directory(tmp_path: Path) -> None:
    config_dir, credentials = _secret_files(tmp_path)
    for env in ({"CREDENTIALS_DIRECTORY": str(credentials)}, {}):
        config = parse("upstream: {api_key_file: only-here}\n", env, base_dir=config_dir)
        assert config.upstream.api_key.reveal() == "only-in-config-dir"
    config = parse("upstream: {api_key_file: key}\n", {}, base_dir=config_dir)
    assert config.upstream.api_key.reveal() == "key-from-config-dir"


def test_file_problems(tmp_path: Path) -> None:
    config_dir, credentials = _secret_files(tmp_path)
    (config_dir / "empty").write_text(" \n")
    (config_dir / "binary").write_bytes(b"\xff\xfe")
    (config_dir / "bad-hook").write_text("not-a-webhook-secret")
    problems = problems_of(
        """\
        upstream:
          api_key: k
          api_key_file: key
        intake:
          token_file: missing
        endpoints:
          - name: a
            url: https://example.com
            secret_file: empty
          - name: b
            url: https://example.com
            secret_file: binary
          - name: c
            url: https://example.com
            secret_file: bad-hook
          - name: d
            url: https://example.com
            secret_file: [1]
        """,
        {"CREDENTIALS_DIRECTORY": str(credentials)},
        base_dir=config_dir,
    )
    assert [(p.path, p.line, p.message) for p in problems] == [
        ("upstream.api_key_file", 3, "give either api_key or api_key_file, not both"),
        (
            "intake.token_file",
            5,
            f"cannot read {config_dir / 'missing'}: No such file or directory "
            "(not in $CREDENTIALS_DIRECTORY either)",
        ),
        ("endpoints[0].secret_file", 9, f"{config_dir / 'empty'} is empty"),
        ("endpoints[1].secret_file", 12, f"{config_dir / 'binary'} is not UTF-8 text"),
        (
            "endpoints[2].secret_file",
            15,
            "must be a webhook secret: 'whsec_' followed by base64 "
            "(make one with `apixo-watcher gen-secret`)",
        ),
        ("endpoints[3].secret_file", 18, "must be the path of a file"),
    ]


def test_rotation_secrets_may_come_from_credential_files(tmp_path: Path) -> None:
    config_dir, credentials = _secret_files(tmp_path)
    (credentials / "hook-new").write_text(WHSEC + "\n")
    (credentials / "hook-old").write_text(WHSEC_OLD)
    config = parse(
        """\
        upstream: {api_key: k}
        endpoints:
          - name: a
            url: https://example.com
            secrets_file: [hook-new, hook-old]
          - name: b
            url: https://example.com
            secrets_file: hook-new
        """,
        {"CREDENTIALS_DIRECTORY": str(credentials)},
        base_dir=config_dir,
    )
    assert config.endpoints[0].secrets == (Secret(WHSEC), Secret(WHSEC_OLD))
    assert config.endpoints[1].secrets == (Secret(WHSEC),)
    problems = problems_of(
        """\
        upstream: {api_key: k}
        endpoints:
          - name: a
            url: https://example.com
            secrets_file: [hook-new, missing]
        """,
        {"CREDENTIALS_DIRECTORY": str(credentials)},
        base_dir=config_dir,
    )
    assert [(p.path, p.line) for p in problems] == [("endpoints[0].secrets_file[1]", 5)]


# --- unknown keys ---------------------------------------------------------------------------


def unknown(section: str, key: str) -> str:
    return f"{MINIMAL}{section}:\n  {key}: 1\n" if section else f"{MINIMAL}{key}: 1\n"


@pytest.mark.parametrize(
    ("text", "path", "line", "suggestion"),
    [
        ("upstream:\n  api_key: k\n  timeuot: 3s\n", "upstream.timeuot", 3, "timeout"),
        ("upstream:\n  api_key: k\n  api_keyfile: f\n", "upstream.api_keyfile", 3, "api_key_file"),
        (unknown("polling", "model"), "polling.model", 4, "models"),
        (unknown("intake", "tokn"), "intake.tokn", 4, "token"),
        (unknown("intake", "token_fil"), "intake.token_fil", 4, "token_file"),
        (unknown("store", "paht"), "store.paht", 4, "path"),
        (unknown("delivery", "retry_schedul"), "delivery.retry_schedul", 4, "retry_schedule"),
        (
            unknown("delivery", "callback_secrets"),
            "delivery.callback_secrets",
            4,
            "callback_secret",
        ),
        (unknown("logging", "levle"), "logging.levle", 4, "level"),
        (unknown("", "endpoint"), "endpoint", 3, "endpoints"),
        (unknown("", "tasks"), "tasks", 3, "tasks_file"),
        (unknown("", "zzzz"), "zzzz", 3, None),
        (
            MINIMAL + "polling:\n  models:\n    m: {dealine: 1h}\n",
            "polling.models.m.dealine",
            5,
            "deadline",
        ),
        (
            MINIMAL + "polling:\n  models:\n    m: {models: {}}\n",
            "polling.models.m.models",
            5,
            None,
        ),
        (
            MINIMAL + "endpoints:\n  - {name: a, url: 'http://h', secret: x, evnts: []}\n",
            "endpoints[0].evnts",
            4,
            "events",
        ),
    ],
)
def test_unknown_keys_are_problems_with_a_suggestion(
    text: str, path: str, line: int, suggestion: str | None
) -> None:
    problems = [p for p in problems_of(text) if p.message.startswith("unknown key")]
    assert len(problems) == 1
    [problem] = problems
    key = path.rsplit(".", 1)[-1]
    assert (problem.path, problem.line) == (path, line)
    hint = f"; did you mean '{suggestion}'?" if suggestion else ""
    assert problem.message == f"unknown key '{key}'{hint}"


# --- every check, one at a time --------------------------------------------------------------

URL = "must be an http:// or https:// URL with a host"
DURATION = "must be a duration like 500ms, 3s, 5m, 2h or a number of seconds"
LISTEN = "must be HOST:PORT (like 127.0.0.1:8787) or unix:/path/to.sock"
TOKEN = "is required when intake.listen is not a loopback address or a unix socket"
WEBHOOK_SECRET = "must be a webhook secret: 'whsec_' followed by base64"
EVENTS = (
    "must be 'task.processing', 'task.succeeded', 'task.failed', 'task.timed_out' "
    "or 'task.not_found'"
)
HOST = "must be a bare host name like hooks.example.com, optionally with :port"
CALLBACK = "is required when allowed_callback_hosts is not empty"


def up(keys: str) -> str:
    """An upstream section with the key and `keys`."""
    return f"upstream: {{api_key: k, {keys}}}"


def ep(
    keys: str = "", *, name: str = "a", url: str = "https://h", secret: str | None = WHSEC
) -> str:
    """A one-endpoint list with `keys` added."""
    fields = [f"name: '{name}'", f"url: '{url}'"]
    fields += [f"secret: {secret}"] if secret else []
    fields += [keys] if keys else []
    return "endpoints:\n  - {" + ", ".join(fields) + "}"


def ep_raw(keys: str) -> str:
    return "endpoints:\n  - {" + keys + "}"


def hdr(headers: str) -> str:
    return ep(f"headers: {{{headers}}}")


def cb_hosts(hosts: str) -> str:
    return f"delivery: {{allowed_callback_hosts: [{hosts}], callback_secret: {WHSEC}}}"


@pytest.mark.parametrize(
    ("extra", "path", "message"),
    [
        # upstream
        (up("base_url: ftp://x"), "upstream.base_url", URL),
        (up("base_url: 'https://'"), "upstream.base_url", URL),
        (up("base_url: 'http://h:99999'"), "upstream.base_url", URL),
        ("upstream: {api_key: ''}", "upstream.api_key", "must not be empty"),
        (up("timeout: 0s"), "upstream.timeout", "must be greater than 0"),
        (up("timeout: soon"), "upstream.timeout", DURATION),
        (up("timeout: -3s"), "upstream.timeout", "must not be negative"),
        (up("max_concurrency: 0"), "upstream.max_concurrency", "must be at least 1"),
        (up("max_concurrency: 1.5"), "upstream.max_concurrency", "must be a whole number"),
        (up("max_concurrency: many"), "upstream.max_concurrency", "must be a whole number"),
        (up("max_concurrency: true"), "upstream.max_concurrency", "not true/false"),
        (up("max_requests_per_second: 0"), "upstream.max_requests_per_second", "greater than 0"),
        (up("max_requests_per_second: .inf"), "upstream.max_requests_per_second", "finite"),
        (up("max_response_bytes: 1000"), "upstream.max_response_bytes", "must be at least 1KiB"),
        (up("max_response_bytes: 16MB"), "upstream.max_response_bytes", "write MiB, not MB"),
        (up("max_response_bytes: lots"), "upstream.max_response_bytes", "must be a size like"),
        # polling
        ("polling: {initial_delay: -1s}", "polling.initial_delay", "must not be negative"),
        ("polling: {initial_interval: 0s}", "polling.initial_interval", "must be greater than 0"),
        ("polling: {max_interval: 0s}", "polling.max_interval", "must be greater than 0"),
        (
            "polling: {max_interval: 1s}",
            "polling.max_interval",
            "must be at least initial_interval (2s)",
        ),
        (
            "polling: {initial_interval: 1m}",
            "polling.initial_interval",
            "must be at most max_interval (30s)",
        ),
        ("polling: {backoff: 0.5}", "polling.backoff", "must be at least 1"),
        ("polling: {backoff: fast}", "polling.backoff", "must be a number"),
        ("polling: {jitter: 1}", "polling.jitter", "must be less than 1"),
        ("polling: {jitter: -0.1}", "polling.jitter", "must be at least 0"),
        ("polling: {deadline: 0s}", "polling.deadline", "must be greater than 0"),
        ("polling: {not_found_grace: never}", "polling.not_found_grace", DURATION),
        ("polling: {models: [a]}", "polling.models", "must be a mapping of model name to"),
        ("polling: {models: {m: 3}}", "polling.models.m", "must be a mapping of keys to values"),
        ("polling: {models: {m: {jitter: 2}}}", "polling.models.m.jitter", "must be less than 1"),
        (
            "polling: {models: {m: {max_interval: 1s}}}",
            "polling.models.m.max_interval",
            "must be at least initial_interval (2s)",
        ),
        (
            "polling: {models: {m: {initial_interval: 1m}}}",
            "polling.models.m.initial_interval",
            "must be at most max_interval (30s)",
        ),
        # store
        ("store: {path: ''}", "store.path", "must not be empty"),
        ("store: {path: [a]}", "store.path", "must be a string"),
        # intake
        ("intake: {listen: '8787'}", "intake.listen", LISTEN),
        ("intake: {listen: 'h:port'}", "intake.listen", LISTEN),
        ("intake: {listen: 'h:70000'}", "intake.listen", LISTEN),
        ("intake: {listen: '::1:8787'}", "intake.listen", "needs brackets around an IPv6"),
        ("intake: {listen: '[zz]:8787'}", "intake.listen", "has an invalid IPv6 address"),
        ("intake: {listen: 'unix:'}", "intake.listen", "needs a socket path after 'unix:'"),
        ("intake: {listen: 8787}", "intake.listen", "must be a string (put the value in quotes)"),
        ("intake: {listen: '0.0.0.0:8787'}", "intake.token", TOKEN),
        ("intake: {listen: '[::]:8787', token: ''}", "intake.token", TOKEN),
        ("intake: {listen: 'example.com:80'}", "intake.token", TOKEN),
        ("intake: {max_body_bytes: 1000}", "intake.max_body_bytes", "must be at least 1024"),
        ("intake: {idle_timeout: 0s}", "intake.idle_timeout", "must be greater than 0"),
        ("intake: {body_timeout: soon}", "intake.body_timeout", "must be a duration"),
        ("intake: {allowed_hosts: ['http://h']}", "intake.allowed_hosts[0]", HOST),
        ("intake: {allowed_hosts: h}", "intake.allowed_hosts", "must be a list"),
        # tasks_file
        ("tasks_file: [a]", "tasks_file", "must be a string"),
        # endpoints
        ("endpoints: {app: {}}", "endpoints", "must be a list"),
        ("endpoints: [app]", "endpoints[0]", "must be a mapping with name, url and secret"),
        (ep_raw(f"url: 'https://h', secret: {WHSEC}"), "endpoints[0].name", "is required"),
        (ep_raw(f"name: a, secret: {WHSEC}"), "endpoints[0].url", "is required"),
        (ep(secret=None), "endpoints[0].secret", "is required (or secret_file, or secrets for"),
        (ep("secrets: []", secret=None), "endpoints[0].secrets", "must not be empty"),
        (ep(name="@callback"), "endpoints[0].name", "must start with a letter or digit and"),
        (ep(name="a b"), "endpoints[0].name", "contain only letters, digits, '_', '.', '-'"),
        (ep(url="mailto:x@y"), "endpoints[0].url", URL),
        (ep(url="https://h/a b"), "endpoints[0].url", "must not contain spaces"),
        (ep(secret="'whsec_!!'"), "endpoints[0].secret", WEBHOOK_SECRET),
        (ep(secret="c2VjcmV0"), "endpoints[0].secret", WEBHOOK_SECRET),
        (ep(secret="whsec_"), "endpoints[0].secret", WEBHOOK_SECRET),
        (ep(f"secrets: [{WHSEC}, nope]", secret=None), "endpoints[0].secrets[1]", WEBHOOK_SECRET),
        (ep(f"secrets: [{WHSEC}]"), "endpoints[0].secrets", "give either secret or secrets"),
        (ep("events: []"), "endpoints[0].events", "must not be empty"),
        (ep("events: task.failed"), "endpoints[0].events", "must be a list"),
        (ep("events: [task.done]"), "endpoints[0].events[0]", EVENTS),
        (ep("events: [task.faild]"), "endpoints[0].events[0]", "did you mean 'task.failed'?"),
        (ep("timeout: 0s"), "endpoints[0].timeout", "must be greater than 0"),
        (ep("headers: [a]"), "endpoints[0].headers", "must be a mapping of keys to values"),
        (
            hdr("Content-Type: x"),
            "endpoints[0].headers.Content-Type",
            "'Content-Type' is set by the watcher and cannot be configured",
        ),
        (hdr("user-agent: x"), "endpoints[0].headers.user-agent", "is set by the watcher"),
        (hdr("Webhook-Id: x"), "endpoints[0].headers.Webhook-Id", "is set by the watcher"),
        (hdr("'a b': x"), 'endpoints[0].headers["a b"]', "is not a valid HTTP header name"),
        (hdr("X-V: 2"), "endpoints[0].headers.X-V", "must be a string (put the value in quotes)"),
        (hdr('X-V: "a\\nb"'), "endpoints[0].headers.X-V", "must not contain line breaks"),
        # aiohttp refuses to send these ("Forbidden control character"): every attempt failed
        (hdr('X-V: "a\\x01b"'), "endpoints[0].headers.X-V", "must not contain control characters"),
        (hdr('X-V: "a\\x7fb"'), "endpoints[0].headers.X-V", "must not contain control characters"),
        (
            f"endpoints:\n  - {{name: app, url: 'https://h', secret: {WHSEC}}}"
            f"\n  - {{name: app, url: 'https://i', secret: {WHSEC}}}",
            "endpoints[1].name",
            "duplicate endpoint name (also used by endpoints[0])",
        ),
        # delivery
        ("delivery: {retry_schedule: []}", "delivery.retry_schedule", "must not be empty"),
        ("delivery: {retry_schedule: [1s, later]}", "delivery.retry_schedule[1]", DURATION),
        ("delivery: {retry_schedule: 5s}", "delivery.retry_schedule", "must be a list"),
        ("delivery: {max_concurrency: 0}", "delivery.max_concurrency", "must be at least 1"),
        (cb_hosts("'https://h.example.com'"), "delivery.allowed_callback_hosts[0]", HOST),
        (cb_hosts("'h.example.com/path'"), "delivery.allowed_callback_hosts[0]", HOST),
        (cb_hosts("'h.example.com:0'"), "delivery.allowed_callback_hosts[0]", HOST),
        (cb_hosts("'user@h.example.com'"), "delivery.allowed_callback_hosts[0]", HOST),
        (cb_hosts("'[nope]:80'"), "delivery.allowed_callback_hosts[0]", HOST),
        (
            "delivery: {allowed_callback_hosts: [h.example.com]}",
            "delivery.callback_secret",
            CALLBACK + " (make one with `apixo-watcher gen-secret`)",
        ),
        (
            "delivery: {allowed_callback_hosts: [h.example.com], callback_secret: ''}",
            "delivery.callback_secret",
            CALLBACK,
        ),
        ("delivery: {callback_secret: plain}", "delivery.callback_secret", WEBHOOK_SECRET),
        # logging
        ("logging: {format: yaml}", "logging.format", "must be 'json' or 'console'"),
        ("logging: {format: jsno}", "logging.format", "'console'; did you mean 'json'?"),
        ("logging: {level: verbose}", "logging.level", "'debug', 'info', 'warning' or 'error'"),
        # sections of the wrong shape
        ("polling: 5", "polling", "must be a mapping of keys to values"),
        ("delivery: [a]", "delivery", "must be a mapping of keys to values"),
    ],
)
def test_each_check(extra: str, path: str, message: str) -> None:
    text = (extra if extra.startswith("upstream:") else MINIMAL + extra) + "\n"
    problem = one_problem(text)
    assert problem.path == path
    assert message in problem.message
    assert problem.line is not None
    assert "Input should" not in problem.message


def test_a_missing_api_key_has_no_line() -> None:
    assert one_problem("logging: {level: info}\n") == ConfigProblem(
        "upstream.api_key", None, "is required (or api_key_file)"
    )
    assert one_problem("") == ConfigProblem(
        "upstream.api_key", None, "is required (or api_key_file)"
    )


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("- a\n- b\n", 1, "must be a mapping of sections"),
        ("just text\n", 1, "must be a mapping of sections"),
        ("a: [\n", 2, "invalid YAML"),
    ],
)
def test_a_document_that_is_not_a_config(text: str, line: int, message: str) -> None:
    problem = one_problem(text)
    assert (problem.path, problem.line) == ("", line)
    assert message in problem.message


# --- accepted values ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("listen", "host", "port", "unix"),
    [
        ("127.0.0.1:8787", "127.0.0.1", 8787, None),
        ("127.5.0.1:1", "127.5.0.1", 1, None),
        ("localhost:0", "localhost", 0, None),
        ("[::1]:8787", "::1", 8787, None),
        ("unix:/run/apixo-watcher/intake.sock", None, None, "/run/apixo-watcher/intake.sock"),
        ("unix:intake.sock", None, None, "/etc/w/intake.sock"),
    ],
)
def test_loopback_and_unix_listen_need_no_token(
    listen: str, host: str | None, port: int | None, unix: str | None
) -> None:
    intake = parse(with_minimal(f"intake: {{listen: '{listen}'}}\n")).intake
    assert (intake.listen, intake.host, intake.port) == (listen, host, port)
    assert intake.unix_path == (Path(unix) if unix else None)
    assert intake.token is None


def test_an_exposed_listen_with_a_token() -> None:
    intake = parse(with_minimal("intake: {listen: '0.0.0.0:8787', token: s3cret}\n")).intake
    assert (intake.host, intake.port, intake.token) == ("0.0.0.0", 8787, Secret("s3cret"))


def test_endpoint_settings() -> None:
    config = parse(
        with_minimal(
            f"""\
            endpoints:
              - name: app.main_1
                url: https://example.com/hook
                secrets: [{WHSEC}, {WHSEC_OLD}]
                events: [task.processing, task.failed, task.failed]
                timeout: 1500ms
                headers: {{Authorization: Bearer abc, X-Tenant: "7"}}
              - name: second
                url: http://127.0.0.1:9000/h
                secret: {WHSEC}
            """
        )
    )
    first, second = config.endpoints
    assert [s.reveal() for s in first.secrets] == [WHSEC, WHSEC_OLD]  # newest first
    assert first.events == frozenset({EventType.PROCESSING, EventType.FAILED})
    assert first.timeout_s == 1.5
    assert dict(first.headers) == {"Authorization": "Bearer abc", "X-Tenant": "7"}
    assert second.events == DEFAULT_EVENTS
    assert second.timeout_s == 10.0
    assert dict(second.headers) == {}
    assert config.endpoint("second") is second
    assert config.endpoint("missing") is None
    assert "2 endpoints" in summary(config)


def test_delivery_settings() -> None:
    delivery = parse(
        with_minimal(
            f"""\
            delivery:
              retry_schedule: [0, 1s, 90]
              max_concurrency: 2
              allowed_callback_hosts: [Hooks.Example.com, "hooks.example.com", "h:8443", "[::1]:9"]
              callback_secret: {WHSEC}
            """
        )
    ).delivery
    assert delivery.retry_schedule_s == (0.0, 1.0, 90.0)
    assert delivery.max_concurrency == 2
    assert delivery.allowed_callback_hosts == ("hooks.example.com", "h:8443", "[::1]:9")
    assert delivery.callback_secret == Secret(WHSEC)


def test_intake_connection_settings() -> None:
    intake = parse(
        with_minimal(
            """\
            intake:
              idle_timeout: 2s
              body_timeout: 500ms
              allowed_hosts: [Watcher.Internal, "watcher.internal", "proxy.example.com:443"]
            """
        )
    ).intake
    assert intake.idle_timeout_s == 2.0
    assert intake.body_timeout_s == 0.5
    assert intake.allowed_hosts == ("watcher.internal", "proxy.example.com:443")
    defaults = parse(with_minimal("")).intake
    assert (defaults.idle_timeout_s, defaults.body_timeout_s) == (15.0, 10.0)
    assert defaults.allowed_hosts == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("logging: {format: console, level: debug}", LoggingConfig("console", "debug")),
        ("logging: {format: JSON, level: WARNING}", LoggingConfig("json", "warning")),
        ("logging: {format: null, level: error}", LoggingConfig(None, "error")),
    ],
)
def test_logging_settings(text: str, expected: LoggingConfig) -> None:
    assert parse(with_minimal(text)).logging == expected


def test_base_url_loses_its_trailing_slash() -> None:
    config = parse("upstream: {api_key: k, base_url: 'http://127.0.0.1:8765/api/v1/'}\n")
    assert config.upstream.base_url == "http://127.0.0.1:8765/api/v1"


# --- per-model polling overrides ------------------------------------------------------------


def test_model_overrides_merge_onto_the_configured_default() -> None:
    config = parse(
        with_minimal(
            """\
            polling:
              initial_interval: 5s
              backoff: 2
              deadline: 1h
              models:
                sora-2: {initial_interval: 15s, max_interval: 60s, deadline: 12h}
                veo-3: {jitter: 0, not_found_grace: 30s}
                nano-banana:
            """
        )
    )
    default = PollingPolicy(initial_interval_s=5.0, backoff=2.0, deadline_s=3600.0)
    assert config.polling.default == default
    assert config.polling.for_model("sora-2") == PollingPolicy(
        initial_interval_s=15.0, max_interval_s=60.0, backoff=2.0, deadline_s=12 * 3600.0
    )
    assert config.polling.for_model("veo-3") == PollingPolicy(
        initial_interval_s=5.0, backoff=2.0, deadline_s=3600.0, jitter=0.0, not_found_grace_s=30.0
    )
    assert config.polling.for_model("nano-banana") == default
    assert config.polling.for_model("unknown-model") == default
    assert "3 model overrides" in summary(config)


def test_an_override_is_checked_against_the_merged_policy() -> None:
    problems = problems_of(
        with_minimal(
            """\
            polling:
              initial_interval: 40s
              max_interval: 50s
              models:
                a: {max_interval: 20s}
                b: {initial_interval: 1m}
                c: {max_interval: 45s}
            """
        )
    )
    assert [(p.path, p.line, p.message) for p in problems] == [
        ("polling.models.a.max_interval", 7, "must be at least initial_interval (40s)"),
        ("polling.models.b.initial_interval", 8, "must be at most max_interval (50s)"),
    ]


# --- everything at once ---------------------------------------------------------------------

MANY_MISTAKES = f"""\
upstream:
  api_key: ${{APIXO_API_KEY}}
  timeuot: 10s
  max_concurrency: 0
polling:
  jitter: 1.5
  initial_interval: 40s
  models:
    sora-2: {{max_interval: 1s, deadlin: 3h}}
intake:
  listen: 0.0.0.0:8787
  max_body_bytes: "10"
endpoints:
  - name: app
    url: http://127.0.0.1:9000/hooks
    secret: whsec_not*base64
    events: [task.succeded]
    headers: {{Content-Type: text/plain}}
  - name: app
    url: nope
  - name: ok
    url: https://example.com
    secret: {WHSEC}
    timeout: -1s
delivery:
  retry_schedule: []
  allowed_callback_hosts: [https://x.example.com/a]
logging:
  format: yaml
strange: 1
upstream_extra: 2
"""


def test_a_config_with_many_mistakes_reports_all_of_them() -> None:
    problems = problems_of(MANY_MISTAKES)
    assert [(p.path, p.line) for p in problems] == [
        ("upstream.api_key", 2),
        ("upstream.timeuot", 3),
        ("upstream.max_concurrency", 4),
        ("polling.jitter", 6),
        ("polling.initial_interval", 7),
        ("polling.models.sora-2.deadlin", 9),
        ("polling.models.sora-2.max_interval", 9),
        ("intake.token", 10),
        ("intake.max_body_bytes", 12),
        ("endpoints[0].secret", 16),
        ("endpoints[0].events[0]", 17),
        ("endpoints[0].headers.Content-Type", 18),
        ("endpoints[1].name", 19),
        ("endpoints[1].secret", 19),
        ("endpoints[1].url", 20),
        ("endpoints[2].timeout", 24),
        ("delivery.retry_schedule", 26),
        ("delivery.allowed_callback_hosts[0]", 27),
        ("logging.format", 29),
        ("strange", 30),
        ("upstream_extra", 31),
    ]
    messages = {p.path: p.message for p in problems}
    assert messages["upstream.api_key"] == "environment variable APIXO_API_KEY is not set"
    assert messages["upstream.timeuot"] == "unknown key 'timeuot'; did you mean 'timeout'?"
    assert messages["polling.models.sora-2.max_interval"] == (
        "must be at least initial_interval (40s)"
    )
    assert messages["endpoints[1].name"] == "duplicate endpoint name (also used by endpoints[0])"
    assert messages["upstream_extra"] == "unknown key 'upstream_extra'; did you mean 'upstream'?"
    assert not any("Input should" in p.message for p in problems)

    text = str(ConfigError(problems, source="c.yaml"))
    assert text.startswith("c.yaml: 21 problem(s) in the configuration\n")
    assert "  polling.jitter (line 6): must be less than 1" in text


def test_duplicate_keys_are_reported_with_the_other_problems() -> None:
    problems = problems_of(
        """\
        upstream:
          api_key: k
          api_key: k2
        logging: {level: loud}
        """
    )
    assert [(p.path, p.line) for p in problems] == [("upstream.api_key", 3), ("logging.level", 4)]
    assert problems[0].message == "duplicate key 'api_key' (first on line 2)"


# --- secrets never leak ---------------------------------------------------------------------

LEAK = "SUPERSECRETleak0123456789"
LEAK_WHSEC = "whsec_" + base64.b64encode(LEAK.encode()).decode()


def test_secrets_in_the_wrong_place_never_reach_an_error(tmp_path: Path) -> None:
    (tmp_path / "leaky").write_text(LEAK + "\n")
    env = {"LEAKY": LEAK, "LEAKY_WHSEC": LEAK_WHSEC}
    problems = problems_of(
        f"""\
        upstream:
          api_key: {LEAK}
          base_url: ${{LEAKY}}
          timeout: ${{LEAKY}}
          max_concurrency: ${{LEAKY}}
        polling:
          models:
            m: {{deadline: "${{LEAKY}}"}}
        intake:
          listen: ${{LEAKY}}
          token: {LEAK}
          max_body_bytes: ${{LEAKY}}
        endpoints:
          - name: ${{LEAKY}}!
            url: ${{LEAKY_WHSEC}}
            secret: {LEAK}-not-whsec
            events: ["${{LEAKY}}"]
            headers: {{X-Token: "{LEAK}\\n"}}
          - name: b
            url: https://example.com
            secret_file: leaky
          - name: c
            url: https://example.com
            secrets: [{LEAK_WHSEC}, "${{LEAKY}}"]
        delivery:
          retry_schedule: ["${{LEAKY}}"]
          allowed_callback_hosts: ["${{LEAKY}}/x"]
          callback_secret: {LEAK}
        logging:
          level: ${{LEAKY}}
          format: {LEAK}
        """,
        env,
        base_dir=tmp_path,
    )
    assert len(problems) >= 15
    text = str(ConfigError(problems, source="c.yaml"))
    assert LEAK not in text
    assert LEAK_WHSEC.removeprefix("whsec_") not in text
    assert all(LEAK not in repr(p) for p in problems)


KEY = "sk-live-4f9a8b7c6d5e4f3a2b1c0d9e"  # what an APIXO key looks like


def shown(problems: list[ConfigProblem]) -> str:
    """Everything a user sees of the problems: check-config's text and each problem."""
    return str(ConfigError(problems, source="c.yaml")) + repr(problems)


@pytest.mark.parametrize(
    ("text", "path", "line"),
    [
        # pasted as a key instead of a value
        (f"upstream:\n  api_key: k\n  {KEY}: x\n", "upstream.<hidden>", 3),
        (f"upstream:\n  api_key: k\n{KEY}:\n", "<hidden>", 3),
        (
            f"upstream:\n  api_key: k\nendpoints:\n  - {{name: a, url: 'https://h', {KEY}: 1,"
            f" secret: {WHSEC}}}\n",
            "endpoints[0].<hidden>",
            4,
        ),
        # a key pasted under a map of names is not a secret to the schema, but its path is
        (
            f"upstream:\n  api_key: k\npolling:\n  models:\n    {KEY}: {{jitter: 2}}\n",
            "polling.models.<hidden>.jitter",
            5,
        ),
    ],
)
def test_a_secret_pasted_as_a_key_is_not_echoed(text: str, path: str, line: int) -> None:
    problems = problems_of(text)
    assert [(p.path, p.line) for p in problems] == [(path, line)]
    assert KEY[:12] not in shown(problems)


def test_a_secret_pasted_twice_as_a_key_is_not_echoed() -> None:
    problems = problems_of(f"upstream:\n  api_key: k\n  {KEY}: 1\n  {KEY}: 2\n")
    assert KEY[:12] not in shown(problems)
    assert any("duplicate key" in p.message for p in problems)


def test_ordinary_unknown_keys_are_still_named() -> None:
    problems = problems_of("upstream:\n  api_key: k\n  timout: 5s\n  flux-2-pro: 1\n")
    assert [p.message for p in problems] == [
        "unknown key 'flux-2-pro'",
        "unknown key 'timout'; did you mean 'timeout'?",
    ] or [p.message for p in problems] == [
        "unknown key 'timout'; did you mean 'timeout'?",
        "unknown key 'flux-2-pro'",
    ]


@pytest.mark.parametrize(
    "text",
    [
        f"upstream:\n  api_key: !{KEY} x\n",
        f"upstream:\n  api_key: !<tag:{KEY}> x\n",
        f"upstream:\n  api_key: !!{KEY} x\n",
    ],
)
def test_a_secret_pasted_as_a_yaml_tag_is_not_echoed(text: str) -> None:
    problems = problems_of(text)
    assert len(problems) == 1
    assert problems[0].line == 2
    assert "tag" in problems[0].message
    assert KEY[:12] not in shown(problems)


@pytest.mark.parametrize("value", [KEY, f"/run/credentials/{KEY}", f"keys/{KEY}/api", f"{KEY}.txt"])
def test_a_secret_pasted_into_a_file_path_is_not_echoed(tmp_path: Path, value: str) -> None:
    problems = problems_of(f"upstream:\n  api_key_file: '{value}'\n", base_dir=tmp_path)
    assert [(p.path, p.line) for p in problems] == [("upstream.api_key_file", 2)]
    assert "cannot read" in problems[0].message
    assert KEY[:12] not in shown(problems)


def test_an_ordinary_file_path_is_still_shown(tmp_path: Path) -> None:
    (problem,) = problems_of("upstream:\n  api_key_file: apixo-api-key\n", base_dir=tmp_path)
    assert problem.message == (
        f"cannot read {tmp_path / 'apixo-api-key'}: No such file or directory"
    )


def test_secrets_never_show_in_a_config_object() -> None:
    config = parse(
        f"""\
        upstream:
          api_key: {LEAK}
        intake:
          listen: 0.0.0.0:1
          token: {LEAK}-token
        endpoints:
          - name: a
            url: https://example.com
            secrets: [{LEAK_WHSEC}]
            headers: {{Authorization: Bearer {LEAK}}}
        delivery:
          allowed_callback_hosts: [h]
          callback_secret: {LEAK_WHSEC}
        """
    )
    encoded = LEAK_WHSEC.removeprefix("whsec_")
    for shown in (repr(config), str(config), summary(config), repr(config.endpoints[0])):
        assert LEAK not in shown
        assert encoded not in shown
    assert config.upstream.api_key.reveal() == LEAK


def test_secret_behaviour() -> None:
    secret = Secret("hunter2")
    assert str(secret) == repr(secret) == "**********"
    assert f"{secret}" == "**********"
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2")
    assert secret != Secret("hunter3")
    assert secret != "hunter2"
    assert len({secret, Secret("hunter2")}) == 1


def test_config_objects_are_frozen() -> None:
    config = parse(MINIMAL)
    with pytest.raises(AttributeError):
        config.upstream.timeout_s = 1.0  # type: ignore[misc]
    models: Any = config.polling.models
    with pytest.raises(TypeError):
        models["x"] = PollingPolicy()


def test_endpoint_config_can_be_built_directly() -> None:
    endpoint = EndpointConfig(name="a", url="https://h", secrets=(Secret(WHSEC),))
    assert endpoint.events == DEFAULT_EVENTS
    assert endpoint.timeout_s == 10.0
    assert dict(endpoint.headers) == {}


# --- the intake section alone, for client commands ------------------------------------------


def test_client_commands_read_only_the_intake_section(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("client-token\n")
    file = tmp_path / "c.yaml"
    file.write_text(
        "upstream: {api_key: '${APIXO_API_KEY}'}\n"  # unset: client commands do not care
        "endpoints: [broken]\n"
        "intake:\n  listen: '${LISTEN:-0.0.0.0:9999}'\n  token_file: token\n"
    )
    intake = load_intake_config(file, environ={})
    assert (intake.host, intake.port, intake.token) == ("0.0.0.0", 9999, Secret("client-token"))
    assert load_intake_config(REPO / "config.example.yaml", environ={}) == IntakeConfig()


def test_intake_problems_still_stop_client_commands(tmp_path: Path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("upstream: {}\nintake:\n  listen: 0.0.0.0:80\n  tokn: x\n")
    with pytest.raises(ConfigError) as info:
        load_intake_config(file, environ={})
    assert [(p.path, p.line) for p in info.value.problems] == [
        ("intake.token", 2),
        ("intake.tokn", 4),
    ]
    file.write_text("intake: [1]\n")
    with pytest.raises(ConfigError):
        load_intake_config(file, environ={})


def test_keys_and_tokens_with_control_characters_are_refused() -> None:
    problems = problems_of('upstream:\n  api_key: "abc\\ndef"\nintake:\n  token: "x\\ty"\n')
    assert [(p.path, p.line) for p in problems] == [("upstream.api_key", 2), ("intake.token", 4)]
    assert all("control characters" in p.message for p in problems)
    assert all("abc" not in p.message for p in problems)


# --- adaptive polling and hints (contract section 8) ------------------------------------------


def test_adaptive_defaults_and_per_model_overrides() -> None:
    config = parse(
        with_minimal(
            """\
            polling:
              strategy: adaptive
              adaptive: {min_samples: 50, polls_per_task: 4.5, min_interval: 1s}
              models:
                sora-2: {strategy: fixed}
                veo: {adaptive: {polls_per_task: auto, window: 200}}
            intake:
              hint_token: hint-secret
            """
        )
    )
    default = config.polling.default
    assert default.strategy == "adaptive"
    assert default.adaptive == AdaptiveSettings(
        min_samples=50, window=1000, polls_per_task=4.5, min_interval_s=1.0
    )
    assert config.polling.for_model("sora-2").strategy == "fixed"
    assert config.polling.for_model("sora-2").adaptive == default.adaptive
    veo = config.polling.for_model("veo")
    assert veo.strategy == "adaptive"
    assert veo.adaptive == AdaptiveSettings(
        min_samples=50, window=200, polls_per_task=None, min_interval_s=1.0
    )
    assert config.intake.hint_token == Secret("hint-secret")
    assert "hint-secret" not in repr(config)


def test_adaptive_is_off_by_default() -> None:
    policy = parse(MINIMAL).polling.default
    assert policy.strategy == "fixed"
    assert policy.adaptive == AdaptiveSettings(
        min_samples=20, window=1000, polls_per_task=None, min_interval_s=0.5
    )
    assert parse(MINIMAL).intake.hint_token is None
    assert parse(with_minimal("intake: {hint_token: ''}\n")).intake.hint_token is None


def test_the_hint_token_may_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "hint").write_text("from-file\n")
    config = parse(with_minimal("intake: {hint_token_file: hint}\n"), base_dir=tmp_path)
    assert config.intake.hint_token == Secret("from-file")


@pytest.mark.parametrize(
    ("yaml", "path", "message"),
    [
        ("polling: {strategy: smart}", "polling.strategy", "must be 'fixed' or 'adaptive'"),
        ("polling: {strategy: adaptiv}", "polling.strategy", "did you mean 'adaptive'?"),
        ("polling: {adaptive: 3}", "polling.adaptive", "must be a mapping of keys to values"),
        ("polling: {adaptive: {windw: 5}}", "polling.adaptive.windw", "did you mean 'window'?"),
        ("polling: {adaptive: {min_samples: 0}}", "polling.adaptive.min_samples", "at least 1"),
        ("polling: {adaptive: {window: 10}}", "polling.adaptive.window", "at least min_samples"),
        (
            "polling: {adaptive: {min_samples: 2000}}",
            "polling.adaptive.min_samples",
            "must be at most window (1000)",
        ),
        ("polling: {adaptive: {polls_per_task: 0.5}}", "polling.adaptive.polls_per_task", "1"),
        (
            "polling: {adaptive: {polls_per_task: many}}",
            "polling.adaptive.polls_per_task",
            "must be auto or a number of requests",
        ),
        ("polling: {adaptive: {min_interval: 0s}}", "polling.adaptive.min_interval", "than 0"),
        (
            "polling: {strategy: adaptive, adaptive: {min_interval: 1m}}",
            "polling.adaptive.min_interval",
            "must be at most max_interval (30s)",
        ),
        (
            "polling: {strategy: adaptive, models: {m: {max_interval: 100ms, "
            "initial_interval: 100ms}}}",
            "polling.models.m.max_interval",
            "must be at least adaptive.min_interval (500ms)",
        ),
        (
            "polling: {models: {m: {strategy: adaptive, adaptive: {window: 1}}}}",
            "polling.models.m.adaptive.window",
            "must be at least min_samples (20)",
        ),
        ("intake: {hint_token: [a]}", "intake.hint_token", "must be a string"),
    ],
)
def test_adaptive_problems(yaml: str, path: str, message: str) -> None:
    problem = one_problem(with_minimal(yaml + "\n"))
    assert problem.path == path
    assert message in problem.message


def test_a_fixed_schedule_may_poll_faster_than_the_adaptive_minimum() -> None:
    config = parse(with_minimal("polling: {initial_interval: 10ms, max_interval: 10ms}\n"))
    assert config.polling.default.max_interval_s == 0.01
