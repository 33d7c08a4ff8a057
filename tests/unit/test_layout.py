"""The folder tree is the architecture: lower layers never import higher ones, and nothing cycles.

Read from the source with `ast` (nothing is imported), so a lazy import inside a function counts
too: it is a dependency all the same.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "watcher"

# Bottom to top. A module may import its own part and any part on a lower layer; parts on one
# layer know nothing of each other (the store does not know the upstream, polling does not know
# delivery), except the foundations on layer 0, which may use each other (no cycles, though).
LAYERS: list[set[str]] = [
    {
        "errors",
        "allocator",
        "models",
        "clock",
        "ids",
        "jsontext",
        "logs",
        "notify",
        "webhook_secret",
        "__init__",
    },
    {"config"},
    {"store", "upstream"},
    {"polling", "delivery", "mirror"},
    {"service", "cluster"},
    {"tasks"},
    {"api"},
    {"daemon"},
    {"cli"},
    {"__main__"},
]


def _part(module: str) -> str:
    """`watcher.store.sqlite` -> `store`; `watcher.daemon` -> `daemon`; `watcher` -> `__init__`."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 else "__init__"


def _layer(part: str) -> int:
    for number, parts in enumerate(LAYERS):
        if part in parts:
            return number
    raise AssertionError(f"watcher.{part} is on no layer: add it to LAYERS in {__file__}")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The watcher modules `module` imports (a `from watcher.x import y` of a submodule y
    counts as importing watcher.x.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("watcher"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("watcher"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    found.discard(module)
    return found


MODULES = _modules()
GRAPH = {m: _imports(m, p, set(MODULES)) for m, p in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_part_and_lower_layers(module: str) -> None:
    part = _part(module)
    wrong = sorted(
        dep
        for dep in GRAPH[module]
        if _part(dep) != part
        and _part(dep) != "__init__"
        and _layer(_part(dep)) >= _layer(part)
        and _layer(_part(dep)) > 0
    )
    assert not wrong, f"{module} (layer {_layer(part)}) imports {wrong}"


def test_no_import_cycles() -> None:
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            cycle = [*path[path.index(module) :], module]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for dep in sorted(GRAPH.get(module, ())):
            visit(dep, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])


def test_every_subpackage_says_what_it_owns() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text("utf-8")))
        assert doc, f"{init} needs a docstring"
        assert "\n" not in doc.strip(), f"{init}: the docstring says in one line what it owns"
