"""A YAML alias bomb ("billion laughs") for tests of the config and the tasks file."""

from __future__ import annotations


def alias_bomb(levels: int, indent: str = "") -> str:
    """Mapping lines `a:`, `b:`, ... of `levels` anchors, each a list of nine aliases of the one
    before: ~600 bytes for 8 levels, which expand to 9**8 (43 million) values."""
    names = "abcdefghijkl"
    lines = [f"{indent}a: &a [x, x, x, x, x, x, x, x, x]\n"]
    for i in range(1, levels):
        aliases = ", ".join([f"*{names[i - 1]}"] * 9)
        lines.append(f"{indent}{names[i]}: &{names[i]} [{aliases}]\n")
    return "".join(lines)
