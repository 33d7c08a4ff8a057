"""The `store` section: SQLite `path` or PostgreSQL `url` (or `url_file`), `lease`, and the
URL's password kept out of every message, summary and repr."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from watcher.config.dburl import redact_url, url_passwords
from watcher.config.settings import (
    DEFAULT_LEASE_S,
    Config,
    parse_config,
    summary,
)
from watcher.errors import ConfigError, ConfigProblem

URL = "postgresql://watcher:pw-Hunter2-secret@db.example.com:5433/watcher?sslmode=require"
PASSWORD = "pw-Hunter2-secret"


def parse(text: str, env: dict[str, str] | None = None) -> Config:
    return parse_config(
        "upstream:\n  api_key: the-key\n" + textwrap.dedent(text),
        source="c.yaml",
        base_dir=Path("/etc/w"),
        environ=env or {},
    )


def problems_of(text: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse(text, env)
    assert PASSWORD not in str(info.value)
    return info.value.problems


def test_url_and_lease() -> None:
    config = parse(f"store:\n  url: {URL}\n  lease: 45s\n")

    assert config.store.path is None
    assert config.store.url is not None
    assert config.store.url.reveal() == URL
    assert config.store.lease_s == 45.0
    assert PASSWORD not in repr(config)
    assert PASSWORD not in summary(config)
    assert "store postgresql://watcher:***@db.example.com:5433/watcher" in summary(config)


def test_sqlite_stays_the_default_and_lease_has_one() -> None:
    config = parse("store: {}\n")

    assert config.store.url is None
    assert config.store.path == Path("/etc/w/var/watcher.db")
    assert config.store.lease_s == DEFAULT_LEASE_S == 30.0


def test_url_from_an_environment_variable_or_empty_means_sqlite() -> None:
    config = parse("store:\n  url: ${DATABASE_URL:-}\n", {"DATABASE_URL": URL})
    assert config.store.url is not None
    assert config.store.url.reveal() == URL
    assert parse("store:\n  url: ${DATABASE_URL:-}\n").store.path is not None


def test_url_file_is_read_from_the_credentials_directory(tmp_path: Path) -> None:
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "db-url").write_text(URL + "\n")

    config = parse("store:\n  url_file: db-url\n", {"CREDENTIALS_DIRECTORY": str(credentials)})

    assert config.store.url is not None
    assert config.store.url.reveal() == URL


def test_path_and_url_together_are_refused_at_the_url() -> None:
    (problem,) = problems_of(f"store:\n  path: /var/w.db\n  url: {URL}\n")

    assert (problem.path, problem.line) == ("store.url", 5)
    assert "either path (SQLite) or url (PostgreSQL)" in problem.message


def test_path_and_url_file_together_are_refused_at_the_url_file(tmp_path: Path) -> None:
    (tmp_path / "db-url").write_text(URL)
    text = f"store:\n  path: /var/w.db\n  url_file: {tmp_path / 'db-url'}\n"

    (problem,) = problems_of(text)

    assert (problem.path, problem.line) == ("store.url_file", 5)


@pytest.mark.parametrize(
    "url",
    [
        "mysql://watcher:pw-Hunter2-secret@db/watcher",
        "postgresql://watcher:pw-Hunter2-secret@db.example.com",
        "db.example.com/watcher?password=pw-Hunter2-secret",
    ],
)
def test_a_bad_url_is_located_and_not_echoed(url: str) -> None:
    (problem,) = problems_of(f"store:\n  url: {url}\n")

    assert (problem.path, problem.line) == ("store.url", 4)
    assert "postgresql://" in problem.message


def test_a_bad_lease_is_located() -> None:
    (problem,) = problems_of("store:\n  lease: 0s\n")
    assert problem.path == "store.lease"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (URL, "postgresql://watcher:***@db.example.com:5433/watcher?sslmode=require"),
        ("postgres://w@h/db?password=p%40ss&x=1", "postgres://w@h/db?password=***&x=1"),
        ("postgresql://w:p%40ss@h1:5432,h2:5432/db", "postgresql://w:***@h1:5432,h2:5432/db"),
        ("postgresql:///db?host=/run/postgresql", "postgresql:///db?host=/run/postgresql"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    for password in url_passwords(url):
        assert password not in redact_url(url)


def test_url_passwords_lists_written_and_decoded_forms() -> None:
    assert url_passwords("postgresql://w:p%40ss@h/db?password=q") == ["p%40ss", "p@ss", "q"]
    assert url_passwords("postgresql://w@h/db") == []


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        # A password pasted as it is: '/' ends the host part early, '@' splits it elsewhere
        # than libpq does, '?' and '#' start a query or a fragment. Shown, each would put
        # (part of) the password in check-config's summary and in every log line and error.
        ("postgresql://watcher:ab/cd9x@db.example.com/watcher", "cd9x"),
        ("postgresql://watcher:p@ss/w0rdx@db.example.com/watcher", "w0rdx"),
        ("postgresql://watcher:ab@cd9x@db.example.com/watcher", "cd9x"),
        ("postgresql://watcher:pa?ss9x@db.example.com/watcher", "ss9x"),
        ("postgresql://watcher:pa#ss9x@db.example.com/watcher", "ss9x"),
    ],
)
def test_a_password_that_is_not_percent_encoded_is_refused_unseen(url: str, secret: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(f"store:\n  url: '{url}'\n")
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("store.url", 4)
    assert "percent-encoded" in problem.message
    assert secret not in str(info.value)
    assert secret not in redact_url(url)


def test_the_ssl_key_password_is_hidden_too() -> None:
    url = "postgresql://w@h/db?sslpassword=key-Pass-77&sslmode=require"
    assert redact_url(url) == "postgresql://w@h/db?sslpassword=***&sslmode=require"
    assert url_passwords(url) == ["key-Pass-77"]


def test_a_lease_shorter_than_three_upstream_timeouts_is_refused_at_the_lease() -> None:
    # Polls stop two thirds into a lease without renewal; the last third is what a poll in
    # flight has to end before another instance may poll the same task.
    (problem,) = problems_of(f"store:\n  url: {URL}\n  lease: 6s\n")  # timeout: 10s default
    assert problem.path == "store.lease"
    assert "at least 3 x upstream.timeout (30s)" in problem.message


def test_an_upstream_timeout_over_a_third_of_the_default_lease_is_refused_at_the_timeout() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            f"upstream:\n  api_key: k\n  timeout: 15s\nstore:\n  url: {URL}\n",
            source="c.yaml",
            base_dir=Path("/etc/w"),
            environ={},
        )
    (problem,) = info.value.problems
    assert (problem.path, problem.line) == ("upstream.timeout", 3)
    assert "at most a third of store.lease (10s)" in problem.message


def test_lease_and_timeout_that_fit_and_sqlite_whatever_the_lease() -> None:
    text = f"upstream:\n  api_key: k\n  timeout: 2s\nstore:\n  url: {URL}\n  lease: 6s\n"
    assert parse_config(text, source="c.yaml", base_dir=Path("/w"), environ={}).store.lease_s == 6
    assert parse("store:\n  lease: 1s\n").store.url is None  # no instances to fence on SQLite
