"""The core's own import graph has no cycle, counting imports under TYPE_CHECKING too."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "p2pmed" / "core"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in CORE.glob("*.py"):
        name = f"p2pmed.core.{path.stem}"
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "p2pmed.core":
                    deps.update(f"p2pmed.core.{a.name}" for a in node.names)
                elif node.module.startswith("p2pmed.core."):
                    deps.add(node.module)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("p2pmed.core."))
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_core_import_graph_has_no_cycle() -> None:
    graph = _graph()
    assert "p2pmed.core.session" in graph
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_no_part_imports_the_session() -> None:
    graph = _graph()
    users = sorted(m for m, deps in graph.items() if "p2pmed.core.session" in deps)
    assert users == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
