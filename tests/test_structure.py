"""The package's shape: every module imports, no import cycle among gateway modules, and
the app factory on top (only ``wsgi.py`` and the gunicorn config import ``create_app``).

The graph is read from the source (``ast``), every import statement that runs counted,
those inside functions too: an import deferred into a function still ties two modules
together. Only ``if TYPE_CHECKING:`` imports are left out: they never run, and a type
named in an annotation is no dependency of the code.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "gateway"
#: The only files allowed to import the factory: what a server or the flask CLI loads.
FACTORY_USERS = {"wsgi", "gunicorn.conf"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_names(path: Path, name: str) -> list[tuple[str, str | None]]:
    """(module, imported attribute or None) for every import statement in the file,
    relative imports resolved against ``name``."""
    is_package = path.name == "__init__.py"
    found = []
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found += [(base, alias.name) for alias in node.names]
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node of the tree except what ``if TYPE_CHECKING:`` guards."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> dict[str, set[str]]:
    """gateway module → the gateway modules it imports. ``from gateway import x`` names
    the module ``gateway.x`` when there is one, else the package root."""
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for module, attribute in imported_names(path, name):
            if not module.startswith("gateway"):
                continue
            target = f"{module}.{attribute}" if attribute and f"{module}.{attribute}" in modules else module
            # Importing ``gateway.a.b`` runs ``gateway.a`` first, but the package roots
            # here only re-export or define a factory that imports lazily: count the
            # module named, which is the dependency the code means.
            if target != name and target in modules:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_gateway_module_imports():
    for name in package_modules():
        importlib.import_module(name)


def test_gateway_modules_import_no_cycle():
    graph = import_graph()
    assert len(graph) > 20  # the walk found the package
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_the_cycle_check_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_nothing_in_the_package_imports_the_factory():
    users = set()
    files = {**package_modules(), "wsgi": ROOT / "wsgi.py", "gunicorn.conf": ROOT / "gunicorn.conf.py"}
    for name, path in files.items():
        for module, attribute in imported_names(path, name):
            if (module, attribute) == ("gateway", "create_app") or module == "gateway.create_app":
                users.add(name)
    assert users <= FACTORY_USERS, f"only wsgi/gunicorn.conf may import create_app: {sorted(users - FACTORY_USERS)}"
    assert "wsgi" in users


def test_the_package_root_imports_only_the_version_at_import_time():
    """Importing ``gateway`` (as RQ does for ``gateway.jobs.run_stage``) must not build
    or import the app: the root's module-level imports are the version only."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    top = [node for node in tree.body if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway")]
    assert [node.module for node in top] == ["gateway.version"]
