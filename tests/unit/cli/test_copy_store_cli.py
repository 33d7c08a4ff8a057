"""`apixo-watcher copy-store` in process: its arguments, the config it needs, and the summary
line it prints (the command against real stores: tests/integration/cli/test_copy_store.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.daemon import write_config
from watcher.cli.copy_store import summary
from watcher.cli.main import main
from watcher.store.bulk import Conflict, TableCounts
from watcher.store.copy import CopyReport


def test_help_says_what_it_does(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["copy-store", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0
    assert "--from SQLITE_PATH" in out
    assert "read-only" in out
    assert "a second run changes nothing" in out


def test_the_sqlite_path_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["copy-store", "-c", "x.yaml"])
    assert done.value.code == 2
    assert "the following arguments are required: --from" in capsys.readouterr().err


def test_a_config_without_store_url_is_a_config_error_at_that_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    config = write_config(tmp_path, upstream_url="http://127.0.0.1:1/api/v1")
    line = config.read_text().splitlines().index("store:") + 1

    code = main(["copy-store", "--from", str(tmp_path / "old.db"), "-c", str(config)])

    err = capsys.readouterr().err
    assert code == 78
    assert f"store.url (line {line}): copy-store copies into the PostgreSQL store" in err
    assert not (tmp_path / "old.db").exists()


def test_the_summary_names_what_happened_to_each_table() -> None:
    report = CopyReport(
        "/var/lib/apixo-watcher/watcher.db",
        "postgresql://watcher:***@db/watcher",
        {
            "tasks": TableCounts(read=5, new=2, updated=1, unchanged=1, conflicts=1),
            "events": TableCounts(read=2, new=1, skipped=1),
            "attempts": TableCounts(),
        },
        [Conflict("tasks", "t", "task t ...")],
        conflicts_total=1,
    )

    assert summary(report) == (
        "copied /var/lib/apixo-watcher/watcher.db into postgresql://watcher:***@db/watcher: "
        "tasks 5 (2 new, 1 updated, 1 unchanged, 1 conflict), events 2 (1 new, 1 skipped), "
        "attempts 0; 1 conflict not copied (listed on stderr)"
    )
