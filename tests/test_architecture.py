"""The shape of the codebase: imports flow one way, and no module is too long to read.

The import graph is read from the source (every module of ``trio_ws`` parsed
with :mod:`ast`, relative imports resolved). Only imports that run when a
module is imported count: module-level ones, including those inside a
module-level ``try``/``if`` (but not ``if TYPE_CHECKING:``), and not those
inside a function (a second check counts those too). The layers::

    _models, _exceptions  <-  _protocol  <-  _engine  <-  _client, web
                                   _http (beside the engine)

``_client`` and ``web`` never import each other; ``_protocol`` imports no trio.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trio_ws

ROOT = Path(trio_ws.__file__).parent
MAX_LINES = 500


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements run at import: the body, descending into module-level if/try/with."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                out += _runtime_statements(node.body)
            out += _runtime_statements(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                out += _runtime_statements(block)
            for handler in node.handlers:
                out += _runtime_statements(handler.body)
        elif isinstance(node, ast.With):
            out += _runtime_statements(node.body)
    return out


def _all_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """Every statement, in functions too, except under ``if TYPE_CHECKING:``."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            out += _all_statements(node.orelse)
            continue
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.stmt):
                out += _all_statements([child])
            elif isinstance(child, ast.excepthandler):
                out += _all_statements(child.body)
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, *, in_functions: bool = False) -> set[str]:
    """The modules ``module`` imports when it is imported (or, with ``in_functions``,
    anywhere outside ``if TYPE_CHECKING:``)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    walk = _all_statements if in_functions else _runtime_statements
    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_package, node)
            for alias in node.names:
                # ``from . import x`` may name a submodule rather than an attribute.
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    return found


GRAPH = {m: {i for i in imports_of(m) if i in MODULES and i != m} for m in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_graph_is_read() -> None:
    # Guards the walker itself: known edges must be seen, TYPE_CHECKING ones not.
    assert "trio_ws._engine._websocket" in GRAPH["trio_ws.web._ws"]
    assert "trio_ws.web._ws" in GRAPH["trio_ws.web"]
    assert "trio_ws._models" in GRAPH["trio_ws"]
    assert len(MODULES) > 40


def test_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    assert _find_cycle(GRAPH) is None


def test_no_import_cycle_even_through_imports_in_functions() -> None:
    # An import moved into a function to dodge a cycle still ties the modules.
    graph = {
        m: {i for i in imports_of(m, in_functions=True) if i in MODULES and i != m} for m in MODULES
    }
    assert _find_cycle(graph) is None


def test_client_and_web_never_import_each_other() -> None:
    crossings = [
        (m, i)
        for m, deps in GRAPH.items()
        for i in deps
        if {_layer(m), _layer(i)} == {"_client", "web"}
    ]
    assert crossings == []


@pytest.mark.parametrize("layer", ["_models", "_exceptions", "_protocol", "_engine", "_http"])
def test_lower_layers_import_no_upper_layer(layer: str) -> None:
    upper = {"_client", "web", "hub", "testing", "_cli", "pytest_plugin", "pytest_fixtures", ""}
    # The bottom layers may import only these (besides themselves).
    allowed = {"_models": set(), "_exceptions": set(), "_protocol": {"_models", "_exceptions"}}
    bad = []
    for m, deps in GRAPH.items():
        if _layer(m) != layer:
            continue
        for i in deps:
            other = _layer(i)
            too_high = other in upper
            if layer in allowed and other != layer and other not in allowed[layer]:
                too_high = True
            if too_high:
                bad.append((m, i))
    assert bad == []


def test_protocol_imports_no_trio() -> None:
    bad = [
        (m, i)
        for m in MODULES
        if _layer(m) == "_protocol"
        for i in imports_of(m)
        if i == "trio" or i.startswith("trio.")
    ]
    assert bad == []


def test_models_and_exceptions_import_nothing_of_trio_ws() -> None:
    assert GRAPH["trio_ws._models"] == set()
    assert GRAPH["trio_ws._exceptions"] == set()


def _line_count(module: str) -> int:
    return len(MODULES[module].read_text(encoding="utf-8").splitlines())


def test_no_module_over_500_lines() -> None:
    # Past ~500 lines a module is asking to be split by responsibility.
    long = {m: n for m in MODULES if (n := _line_count(m)) > MAX_LINES}
    assert long == {}
