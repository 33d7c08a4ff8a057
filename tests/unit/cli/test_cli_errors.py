"""Errors of the command: one clear line (or every problem), journald priority under systemd."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from watcher.cli.main import error_line, main


def test_error_lines_carry_the_error_priority_when_stderr_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        monkeypatch.setattr(sys, "stderr", stream)
        error_line("bad config\n  polling.backoff (line 3): must be at least 1")
    assert path.read_text().splitlines() == [
        "<3>apixo-watcher: bad config",
        "<3>  polling.backoff (line 3): must be at least 1",
    ]


def test_no_prefix_outside_the_journal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    error_line("cannot reach the daemon")
    assert capsys.readouterr().err == "apixo-watcher: cannot reach the daemon\n"


def test_a_config_error_exits_78_without_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    config = tmp_path / "c.yaml"
    config.write_text("upstream:\n  api_key: k\n  timeout: soon\n")
    assert main(["check-config", "-c", str(config)]) == 78
    err = capsys.readouterr().err
    assert "upstream.timeout (line 3)" in err
    assert "Traceback" not in err
