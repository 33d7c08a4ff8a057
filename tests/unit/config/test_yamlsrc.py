"""YAML loading with line numbers: the locations every config and tasks-file problem points at."""

from __future__ import annotations

import textwrap
import tracemalloc

import pytest

from tests.helpers.yamlbomb import alias_bomb
from watcher.config.yamlsrc import LineMap, format_path, load_yaml, load_yaml_collecting
from watcher.errors import ConfigError

DOC = textwrap.dedent(
    """\
    # a comment
    upstream:
      api_key: k
    endpoints:
      - name: app
        url: http://h/x
        events: [task.failed, task.succeeded]
      -
        name: other
    flow: {a: 1, b: [x, y]}
    """
)


def test_data_is_plain_python() -> None:
    data, _ = load_yaml(DOC, "c.yaml")
    assert data == {
        "upstream": {"api_key": "k"},
        "endpoints": [
            {"name": "app", "url": "http://h/x", "events": ["task.failed", "task.succeeded"]},
            {"name": "other"},
        ],
        "flow": {"a": 1, "b": ["x", "y"]},
    }


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ((), 2),
        (("upstream",), 2),
        (("upstream", "api_key"), 3),
        (("endpoints",), 4),
        (("endpoints", 0), 5),
        (("endpoints", 0, "name"), 5),
        (("endpoints", 0, "url"), 6),
        (("endpoints", 0, "events", 1), 7),
        (("endpoints", 1), 9),  # where the item's content starts
        (("endpoints", 1, "name"), 9),
        (("flow", "b", 1), 10),
    ],
)
def test_line_map_knows_every_node(path: tuple[str | int, ...], line: int) -> None:
    _, lines = load_yaml(DOC, "c.yaml")
    assert lines[path] == line
    assert lines.line_for(path) == line


@pytest.mark.parametrize(
    ("path", "line"),
    [
        (("upstream", "timeout"), 2),  # a missing key: its section's line
        (("endpoints", 1, "url"), 9),
        (("endpoints", 7, "url"), 4),
        (("nope", "deeper"), 2),  # nothing but the document
    ],
)
def test_line_for_falls_back_to_the_nearest_ancestor(
    path: tuple[str | int, ...], line: int
) -> None:
    _, lines = load_yaml(DOC, "c.yaml")
    assert path not in lines
    assert lines.line_for(path) == line


def test_line_for_without_any_line_is_none() -> None:
    assert LineMap().line_for(("a", 0)) is None


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ((), ""),
        (("endpoints", 0, "url"), "endpoints[0].url"),
        (("polling", "models", "sora-2", "deadline"), "polling.models.sora-2.deadline"),
        (("polling", "models", "gpt-4.1"), 'polling.models["gpt-4.1"]'),
        (("headers", "bad name"), 'headers["bad name"]'),
        (("tasks", 3), "tasks[3]"),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


def test_an_empty_document_is_none() -> None:
    assert load_yaml("", "c.yaml") == (None, LineMap())
    assert load_yaml("# only a comment\n", "c.yaml")[0] is None


def _single_problem(text: str) -> tuple[int | None, str]:
    with pytest.raises(ConfigError) as info:
        load_yaml(text, "c.yaml")
    assert info.value.source == "c.yaml"
    [problem] = info.value.problems
    assert problem.path == ""
    return problem.line, problem.message


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("a: 1\nb\nc: 2\n", 2, "could not find expected ':'"),
        ("a: [1, 2\nb: 3\n", 2, "expected ',' or ']'"),
        ("a:\n  b: 1\n c: 2\n", 3, "invalid YAML"),
        ("a:\n\t- b\n", 2, "tabs cannot indent YAML"),
        ("a: 1\n---\nb: 2\n", 2, "expected a single document"),
        ("a: 'unterminated\n", 2, "invalid YAML"),
        ("a: ok\nb: \x00\n", 2, "unacceptable character #x0000"),
    ],
)
def test_syntax_errors_carry_their_line(text: str, line: int, words: str) -> None:
    got_line, message = _single_problem(text)
    assert got_line == line
    assert words in message


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system ['echo hi']\n",
        "a: !!python/name:os.system\n",
        "a: !custom thing\n",
    ],
)
def test_loading_is_safe(text: str) -> None:
    _, message = _single_problem(text)
    assert "unsupported tag" in message


def test_an_impossible_value_is_a_problem() -> None:
    _, message = _single_problem("when: 2024-13-45\n")
    assert "month must be in 1..12" in message


DUPLICATES = textwrap.dedent(
    """\
    upstream:
      api_key: a
      timeout: 3s
      api_key: b
    endpoints:
      - {name: x, name: y}
    upstream: {}
    """
)


def test_duplicate_keys_are_all_reported_with_both_lines() -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml(DUPLICATES, "c.yaml")
    assert [(p.path, p.line, p.message) for p in info.value.problems] == [
        ("upstream.api_key", 4, "duplicate key 'api_key' (first on line 2)"),
        ("endpoints[0].name", 6, "duplicate key 'name' (first on line 6)"),
        ("upstream", 7, "duplicate key 'upstream' (first on line 1)"),
    ]


def test_collecting_returns_duplicates_and_the_data() -> None:
    data, lines, problems = load_yaml_collecting(DUPLICATES, "c.yaml")
    assert data["endpoints"] == [{"name": "y"}]  # the last one wins, as in PyYAML
    assert len(problems) == 3
    assert lines[("endpoints", 0, "name")] == 6


def test_keys_of_different_types_are_not_duplicates() -> None:
    data, _ = load_yaml("1: int\n'1': str\n", "c.yaml")
    assert data == {1: "int", "1": "str"}


def test_anchors_aliases_and_merge_keys() -> None:
    text = textwrap.dedent(
        """\
        base: &base
          timeout: 3s
          headers: {X-A: "1"}
        endpoints:
          - <<: *base
            name: a
          - name: b
            extra: *base
        """
    )
    data, lines = load_yaml(text, "c.yaml")
    assert data["endpoints"][0] == {"timeout": "3s", "headers": {"X-A": "1"}, "name": "a"}
    assert lines[("endpoints", 0, "name")] == 6
    # Inside an alias, a path falls back to where the alias is used.
    assert lines.line_for(("endpoints", 0, "timeout")) == 5
    assert lines.line_for(("endpoints", 1, "extra", "timeout")) == 8


def test_an_alias_bomb_is_refused_before_it_expands() -> None:
    text = "upstream: {api_key: k}\nheaders:\n" + alias_bomb(8, indent="  ")
    assert len(text) < 700
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_yaml(text, "c.yaml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # the expansion would take gigabytes
    (problem,) = caught.value.problems
    assert problem.line == 4  # where the first alias is used
    assert "aliases" in problem.message
    assert "10000" in problem.message


def test_aliases_that_expand_modestly_are_fine() -> None:
    data, _ = load_yaml(alias_bomb(3), "c.yaml")  # 9 + 81 + 729 values
    assert len(data["c"]) == 9
    assert data["c"][8][8] == ["x"] * 9


def test_a_recursive_alias_is_refused() -> None:
    # It would be a value that contains itself: no config key can take it, and expanding it
    # (validation, JSON) never ends.
    with pytest.raises(ConfigError) as caught:
        load_yaml("x: 1\na: &x [1, *x]\n", "c.yaml")
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert "contains itself" in problem.message


def test_line_map_is_a_read_only_mapping() -> None:
    _, lines = load_yaml("a: {b: 1}\n", "c.yaml")
    assert dict(lines) == {(): 1, ("a",): 1, ("a", "b"): 1}
    assert len(lines) == 3
    assert "3 paths" in repr(lines)
