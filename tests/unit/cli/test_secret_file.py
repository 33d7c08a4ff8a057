"""`gen-secret --file`: the secret `make run` keeps in the state directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from watcher.cli.main import main
from watcher.cli.secret_file import keep_secret
from watcher.errors import WatcherError
from watcher.webhook_secret import decode_secret


def test_created_once_with_mode_0600_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "var" / "webhook-secret"
    secret, created = keep_secret(path)
    assert created
    assert len(decode_secret(secret)) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert keep_secret(path) == (secret, False)
    assert [p.name for p in path.parent.iterdir()] == ["webhook-secret"]  # no temp file left


def test_a_file_that_holds_no_secret_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "webhook-secret"
    for content in ("", "not a secret\n", "whsec_***\n"):
        path.write_text(content)
        with pytest.raises(WatcherError) as info:
            keep_secret(path)
        assert str(path) in info.value.message
        assert "remove it" in info.value.message
        assert content.strip() == "" or content.strip() not in info.value.message


def test_gen_secret_file_prints_the_secret_on_stdout_and_the_hint_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "webhook-secret"
    assert main(["gen-secret", "--file", str(path)]) == 0
    first = capsys.readouterr()
    secret = path.read_text().strip()
    assert first.out == secret + "\n"
    assert secret not in first.err
    assert f"created a webhook secret in {path} (mode 0600)" in first.err
    assert f"APP_WEBHOOK_SECRET=$(cat {path}) python examples/receiver.py" in first.err

    path.chmod(0o644)
    assert main(["gen-secret", "--file", str(path)]) == 0
    second = capsys.readouterr()
    assert second.out == first.out
    assert f"using the webhook secret in {path}" in second.err
    assert f"readable by others: chmod 600 {path}" in second.err

    path.write_text("junk\n")
    assert main(["gen-secret", "--file", str(path)]) == 1
    bad = capsys.readouterr()
    assert bad.out == ""
    assert "does not hold a webhook secret" in bad.err
