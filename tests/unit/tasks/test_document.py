"""Reading a tasks file's text: entries, located problems, fingerprints, aliases."""

from __future__ import annotations

import textwrap
import tracemalloc

import pytest
import yaml

from tests.helpers.yamlbomb import alias_bomb
from watcher.tasks.document import (
    FileEntry,
    Invalid,
    Unchanged,
    compose_tasks,
    parse_tasks_file,
    read_entries,
    unfinished_line,
)

ENDPOINTS = ("app", "audit")


def parse(text: str, known: frozenset[bytes] = frozenset()) -> tuple[list[FileEntry], list[str]]:
    content = parse_tasks_file(
        textwrap.dedent(text),
        source="tasks.yaml",
        endpoint_names=ENDPOINTS,
        allowed_callback_hosts=("hooks.example.com",),
        known=known,
    )
    return content.entries, [str(p) for p in content.problems]


def test_good_entries_become_registrations_with_their_lines() -> None:
    entries, problems = parse(
        """\
        # comment
        tasks:
          - task_id: a1
            model: nano-banana
            metadata: {order_id: 42, note: "x", ratio: 0.5, ok: true, none: null}
          - {task_id: a2, model: sora-2, endpoints: [app], deadline: 2h}
          - task_id: a3
            model: flux-2
            callback_url: https://hooks.example.com:8443/cb
        """
    )
    assert problems == []
    assert [(e.spec.task_id, e.path, e.line) for e in entries] == [
        ("a1", "tasks[0]", 3),
        ("a2", "tasks[1]", 6),
        ("a3", "tasks[2]", 7),
    ]
    assert entries[0].spec.metadata == {
        "order_id": 42,
        "note": "x",
        "ratio": 0.5,
        "ok": True,
        "none": None,
    }
    assert entries[1].spec.endpoints == ("app",)
    assert entries[1].spec.deadline_s == 7200
    assert entries[2].spec.callback_url == "https://hooks.example.com:8443/cb"


@pytest.mark.parametrize(
    "value",
    [
        "{a: 1, b: -2, c: 0x1F, d: 0o17, e: 1_000, f: 190:20:30, g: +12}",
        "{a: 1.5, b: 1e3, c: 1.0e+3, d: -.5, e: 6.8523015e+5, f: 685_230.15}",
        "{a: yes, b: No, c: on, d: OFF, e: true, f: ~, g: null, h: ''}",
        "{a: '007', b: 007, c: 0b101, d: 1e999x, e: 12:30, f: [1, [2, {x: y}]]}",
        "{b: \"tab\\there\\u00e9\", c: 'it''s', d: \"two\n      lines\"}",
        "\n      text: |\n        two\n        lines\n      folded: >\n        one\n        line\n",
        "{2: int key, true: bool key, 1.5: float key, null: null key}",
    ],
)
def test_values_are_read_as_pyyaml_reads_them(value: str) -> None:
    # The entries are built by our own small constructor; it must agree with PyYAML's.
    text = f"tasks:\n  - task_id: t\n    model: m\n    metadata: {value}\n"
    entries, problems = parse(text)
    assert problems == []
    assert entries[0].spec.metadata == yaml.safe_load(text)["tasks"][0]["metadata"]


def test_a_bad_entry_is_one_problem_with_its_line_and_the_rest_import() -> None:
    entries, problems = parse(
        """\
        tasks:
          - {task_id: ok_1, model: m}
          - task_id: no_model
          - task_id: ok_2
            model: m
            endpoints: [ghost]
          - "just a string"
          - {task_id: ok_3, model: m, colour: red}
          - {task_id: ok_4, model: m, callback_url: 'http://hooks.example.com:99999/x'}
          - {task_id: ok_5, model: m}
        """
    )
    assert [e.spec.task_id for e in entries] == ["ok_1", "ok_5"]
    assert problems == [
        "tasks[1].model (line 3): is required",
        "tasks[2].endpoints (line 6): unknown endpoint 'ghost'",
        "tasks[3] (line 7): must be an object",
        "tasks[4].colour (line 8): unknown field",
        "tasks[5].callback_url (line 9): must be an http(s) URL with a host and, if any, a "
        "port from 1 to 65535",
    ]


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            "{task_id: t, model: m, model: n}",
            "tasks[0].model (line 2): duplicate key 'model'",
        ),
        (
            "{task_id: t, model: m, metadata: {when: 2024-01-01}}",
            "tasks[0].metadata.when (line 2): values of type !!timestamp are not supported here "
            "(a string, number, list or mapping)",
        ),
        (
            "{task_id: t, model: m, metadata: !!binary aGk=}",
            "tasks[0].metadata (line 2): values of type !!binary are not supported here "
            "(a string, number, list or mapping)",
        ),
        (
            "{task_id: t, model: m, metadata: {? [a]: 1}}",
            "tasks[0].metadata (line 2): a mapping key must be a plain value",
        ),
        (
            "{task_id: t, model: m, metadata: {x: .nan}}",
            "tasks[0].metadata (line 2): must be JSON (no NaN or Infinity)",
        ),
        (
            "{<<: {task_id: t}, model: m}",
            "tasks[0] (line 2): merge keys (<<) are not allowed in the tasks file",
        ),
    ],
)
def test_what_an_entry_may_not_hold(entry: str, problem: str) -> None:
    entries, problems = parse(f"tasks:\n  - {entry}\n  - {{task_id: other, model: m}}\n")
    assert problems == [problem]
    assert [e.spec.task_id for e in entries] == ["other"]


def test_an_id_listed_twice_with_two_models_is_a_problem_at_the_second() -> None:
    entries, problems = parse(
        "tasks:\n  - {task_id: t, model: m}\n  - {task_id: t, model: m}\n"
        "  - task_id: t\n    model: n\n"
    )
    assert [e.spec.task_id for e in entries] == ["t", "t"]
    assert problems == ["tasks[2].model (line 5): task 't' is listed before with model 'm'"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tasks:\n  - {task_id: a, model: m\n", "(document) (line 3): invalid YAML"),
        ("- {task_id: a, model: m}\n", "(document) (line 1): must be a mapping with one key"),
        ("tasks: []\nextra: 1\n", "(document) (line 2): must be a mapping with one key"),
        ("tasks: {a: 1}\n", "tasks (line 1): must be a list"),
        ("tasks: []\ntasks: []\n", "tasks (line 2): duplicate key 'tasks'"),
        ("tasks:\n  - {a: 1}\n---\ntasks: []\n", "(document) (line 3): invalid YAML"),
    ],
)
def test_a_document_that_is_not_tasks_registers_nothing(text: str, problem: str) -> None:
    entries, problems = parse(text)
    assert entries == []
    assert len(problems) == 1
    assert problems[0].startswith(problem)


@pytest.mark.parametrize("text", ["", "# nothing yet\n", "tasks:\n", "tasks: []\n"])
def test_no_tasks_is_no_problem(text: str) -> None:
    assert parse(text) == ([], [])


def test_an_alias_bomb_in_one_entry_is_refused_unexpanded_and_small() -> None:
    bomb = alias_bomb(8, indent="      ")
    text = (
        "tasks:\n"
        "  - task_id: bomb\n"
        "    model: m\n"
        "    metadata:\n" + bomb + "  - {task_id: fine, model: m}\n"
    )
    assert len(text) < 800
    tracemalloc.start()
    try:
        entries, problems = parse(text)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # expanded, it took 2.7 GB and ended in MemoryError
    assert [e.spec.task_id for e in entries] == ["fine"]
    assert problems == [
        "tasks[0].metadata.b[0] (line 6): YAML aliases (*name) are not allowed in the tasks file: "
        "write the value out"
    ]


@pytest.mark.parametrize(
    ("text", "line", "path"),
    [
        # an alias to an earlier entry's value
        (
            "tasks:\n  - {task_id: a, model: &m m}\n  - {task_id: b, model: *m}\n",
            3,
            "tasks[1].model",
        ),
        # an alias within the entry
        ("tasks:\n  - {task_id: &i b, model: *i}\n", 2, "tasks[0].model"),
        # a whole entry that is an alias of an earlier one
        ("tasks:\n  - &e {task_id: a, model: m}\n  - *e\n", 2, "tasks[1]"),
        # the list itself inside an entry
        (
            "tasks: &all\n  - {task_id: a, model: m, metadata: {x: *all}}\n",
            2,
            "tasks[0].metadata.x",
        ),
    ],
)
def test_every_alias_is_refused_at_its_entry(text: str, line: int, path: str) -> None:
    entries, problems = parse(text)
    assert len(problems) == 1
    assert problems[0].startswith(f"{path} (line {line}): YAML aliases")
    assert all(e.spec.task_id == "a" for e in entries)


def test_an_anchor_without_alias_is_harmless() -> None:
    entries, problems = parse("tasks:\n  - &first {task_id: a, model: m, metadata: &md {x: 1}}\n")
    assert problems == []
    assert entries[0].spec.metadata == {"x": 1}


def _fingerprints(text: str) -> list[bytes]:
    content = parse_tasks_file(
        text, source="t", endpoint_names=ENDPOINTS, allowed_callback_hosts=(), known=frozenset()
    )
    return [e.fingerprint for e in content.entries]


def test_known_entries_are_skipped_and_only_new_or_changed_ones_are_read() -> None:
    before = "tasks:\n  - {task_id: a, model: m}\n  - {task_id: b, model: m}\n"
    known = frozenset(_fingerprints(before))
    after = (
        "# a comment added above\n"
        "tasks:\n"
        "  - {task_id: new, model: m}\n"  # inserted before the others
        "  - {task_id: a, model: m}\n"
        "  - {task_id: b, model: m, metadata: {changed: true}}\n"
    )
    tasks = compose_tasks(after, "t")
    assert tasks is not None
    results = list(
        read_entries(tasks, after, endpoint_names=ENDPOINTS, allowed_callback_hosts=(), known=known)
    )
    assert [type(r) for r in results] == [FileEntry, Unchanged, FileEntry]
    assert [r.spec.task_id for r in results if isinstance(r, FileEntry)] == ["new", "b"]
    assert isinstance(results[1], Unchanged)
    assert results[1].fingerprint in known


def test_a_fingerprint_is_the_entry_text_so_any_change_to_it_reads_it_again() -> None:
    one, two = _fingerprints("tasks:\n  - {task_id: a, model: m}\n  - {task_id: a, model: m}\n")
    assert one == two
    (block,) = _fingerprints("tasks:\n  - task_id: a\n    model: m\n")
    (other,) = _fingerprints("tasks:\n  - {task_id: b, model: m}\n")
    assert len({one, block, other}) == 3


def test_appending_keeps_the_fingerprint_of_the_last_block_entry() -> None:
    before = "tasks:\n  - task_id: a\n    model: m\n"
    after = before + "  - task_id: b\n    model: m\n"
    assert _fingerprints(after)[0] == _fingerprints(before)[0]


def test_invalid_entries_are_never_skipped() -> None:
    # Only imported entries become known; a bad one is reported again on every read (a reload
    # that adds the endpoint it names makes it valid).
    text = "tasks:\n  - {task_id: a, model: m, endpoints: [later]}\n"
    tasks = compose_tasks(text, "t")
    assert tasks is not None
    (result,) = read_entries(tasks, text, endpoint_names=ENDPOINTS, allowed_callback_hosts=())
    assert isinstance(result, Invalid)
    (result,) = read_entries(tasks, text, endpoint_names=["later"], allowed_callback_hosts=())
    assert isinstance(result, FileEntry)


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"", None),
        (b"tasks:\n", None),
        (b"tasks:\n  - {task_id: order-00", 2),
        (b"tasks:\n  - {task_id: a, model: m}", 2),
        (b"tasks: []", 1),
    ],
)
def test_a_last_line_without_its_newline_is_unfinished(data: bytes, line: int | None) -> None:
    assert unfinished_line(data) == line
