"""No import cycle inside the package (issue 7): the imports between edgeser's modules form a DAG,
counting the lazy imports inside functions too (they keep torch out of the runtime; they must not
hide a cycle). The implicit import of a package's ``__init__`` by its submodules is not counted."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "edgeser"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(name: str, modules: set[str]) -> str | None:
    """The edgeser module an imported dotted name refers to (a module, or the package it names)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(path: Path, me: str, modules: set[str]) -> set[str]:
    is_pkg = path.name == "__init__.py"
    base = me if is_pkg else me.rpartition(".")[0]
    out: set[str] = set()

    def visit(nodes: list[ast.AST]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("edgeser"):
                        out.add(resolve(a.name, modules))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    pkg = base
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    target = f"{pkg}.{node.module}" if node.module else pkg
                elif (node.module or "").startswith("edgeser"):
                    target = node.module
                else:
                    continue
                for a in node.names:  # "from . import x" may name a submodule
                    sub = f"{target}.{a.name}"
                    out.add(sub if sub in modules else resolve(target, modules))

    visit([n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))])
    out.discard(None)
    out.discard(me)
    return out  # type: ignore[return-value]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state and (c := dfs(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := dfs(n)):
            return c
    return None


def test_find_cycle_known_graphs() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycle_in_edgeser() -> None:
    files = sorted(PKG.rglob("*.py"))
    modules = {module_name(f) for f in files}
    graph = {module_name(f): imports_of(f, module_name(f), modules) for f in files}
    assert graph["edgeser.runtime.recognizer"] >= {"edgeser.runtime.stream"}  # the parser sees real edges
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)
