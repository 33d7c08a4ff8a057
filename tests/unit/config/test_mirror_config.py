"""The `mirror` section (contract section 9): targets, S3 credentials, sizes, defaults, and
every mistake reported at its YAML path without repeating a secret."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from watcher.config.settings import Config, MirrorConfig, S3Config, Secret, parse_config
from watcher.errors import ConfigError, ConfigProblem

MINIMAL = "upstream:\n  api_key: the-key\n"


def parse(extra: str, env: dict[str, str] | None = None) -> Config:
    text = MINIMAL + textwrap.dedent(extra)
    return parse_config(text, source="c.yaml", base_dir=Path("/etc/w"), environ=env or {})


def problems(extra: str, env: dict[str, str] | None = None) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        parse(extra, env)
    return info.value.problems


def test_mirroring_is_off_without_a_target() -> None:
    assert parse("").mirror is None
    assert parse("mirror: {}\n").mirror is None


def test_a_file_target_with_the_defaults() -> None:
    mirror = parse("mirror:\n  target: file:///var/lib/w/results\n").mirror
    assert mirror == MirrorConfig(
        target="file:///var/lib/w/results",
        directory=Path("/var/lib/w/results"),
        max_file_bytes=2 * 1024**3,
        max_concurrency=4,
        timeout_s=600.0,
        retention_s=30 * 86400.0,
    )


def test_a_relative_directory_is_relative_to_the_config_file() -> None:
    mirror = parse("mirror: {target: 'file://results'}\n").mirror
    assert mirror is not None
    assert mirror.directory == Path("/etc/w/results")


def test_an_s3_target_with_every_key(tmp_path: Path) -> None:
    (tmp_path / "s3-secret").write_text("the-secret\n")
    mirror = parse(
        f"""
        mirror:
          target: s3://my-bucket/apixo/results/
          s3:
            endpoint_url: https://s3.example.com/
            region: eu-central-1
            access_key_id: ${{KEY_ID}}
            secret_access_key_file: {tmp_path / "s3-secret"}
          public_base_url: https://files.example.com/results/
          max_file_bytes: 500MiB
          max_concurrency: 8
          timeout: 2m
          retention: 7d
        """,
        {"KEY_ID": "AKIAEXAMPLE"},
    ).mirror
    assert mirror == MirrorConfig(
        target="s3://my-bucket/apixo/results/",
        bucket="my-bucket",
        prefix="apixo/results",
        s3=S3Config(
            endpoint_url="https://s3.example.com",
            region="eu-central-1",
            access_key_id=Secret("AKIAEXAMPLE"),
            secret_access_key=Secret("the-secret"),
        ),
        public_base_url="https://files.example.com/results",
        max_file_bytes=500 * 1024**2,
        max_concurrency=8,
        timeout_s=120.0,
        retention_s=7 * 86400.0,
    )
    assert "the-secret" not in repr(mirror)


@pytest.mark.parametrize(
    ("extra", "path", "words"),
    [
        ("mirror: {target: 'ftp://x/y'}\n", "mirror.target", "file://DIRECTORY or s3://"),
        ("mirror: {target: 's3://'}\n", "mirror.target", "must name an S3 bucket"),
        ("mirror: {target: 's3://Bad_Bucket/x'}\n", "mirror.target", "must name an S3 bucket"),
        ("mirror: {target: 'file://'}\n", "mirror.target", "directory is missing"),
        ("mirror: {target: 'file:///r', max_file_bytes: 2GB}\n", "mirror.max_file_bytes", "GiB"),
        ("mirror: {target: 'file:///r', max_concurrency: 0}\n", "mirror.max_concurrency", "1"),
        ("mirror: {target: 'file:///r', timeout: 0s}\n", "mirror.timeout", "greater than"),
        ("mirror: {target: 'file:///r', retention: soon}\n", "mirror.retention", "duration"),
        (
            "mirror: {target: 'file:///r', public_base_url: files}\n",
            "mirror.public_base_url",
            "http",
        ),
        ("mirror: {target: 'file:///r', s3: {region: x}}\n", "mirror.s3", "only for an s3://"),
        ("mirror: {public_base_url: 'https://f.example'}\n", "mirror.target", "is required"),
        ("mirror: {target: 'file:///r', timout: 1m}\n", "mirror.timout", "did you mean 'timeout'"),
        (
            "mirror: {target: 's3://bk1/p', s3: {access_key_id: AKIA}}\n",
            "mirror.s3.secret_access_key",
            "give both",
        ),
        ("mirror: {target: 's3://bk1/p', s3: {regoin: x}}\n", "mirror.s3.regoin", "'region'"),
    ],
)
def test_mistakes_are_reported_at_their_path(extra: str, path: str, words: str) -> None:
    [problem] = problems(extra)
    assert problem.path == path
    assert words in problem.message
    assert problem.line is not None


def test_the_secret_never_appears_in_a_problem() -> None:
    found = problems(
        "mirror: {target: 's3://bk1/p', s3: {secret_access_key: \"sEcReT\\nvalue\", region: ''}}\n"
    )
    assert {p.path for p in found} >= {"mirror.s3.secret_access_key"}
    assert all("sEcReT" not in p.message for p in found)
