"""The layer map of stock_pipeline/__init__.py, enforced: every import (a lazy one inside a
function included) goes down the layers, and no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import stock_pipeline

PACKAGE = Path(stock_pipeline.__file__).parent

# layer -> the layers it may import (the root package, `stock_pipeline`, is open to all).
ALLOWED = {
    "foundation": set(),
    "core": {"foundation"},
    "rate_limit": {"foundation"},
    "observability": {"foundation"},
    "allegro": {"core", "foundation"},
    "warehouse": {"core", "foundation"},
    "store": {"core", "foundation"},
    "notify": {"core", "foundation"},
    "engine": {"allegro", "store", "rate_limit", "observability", "core", "foundation"},
    "defs": {"engine", "allegro", "warehouse", "store", "notify", "rate_limit", "observability", "core", "foundation"},
    "definitions": {"defs", "foundation"},
    "cli": {
        "definitions",
        "defs",
        "engine",
        "allegro",
        "warehouse",
        "store",
        "notify",
        "rate_limit",
        "observability",
        "core",
        "foundation",
        "simulator",
    },
    "simulator": set(),
}
SIMULATOR_USERS = {"stock_pipeline.cli.demo"}  # the demo starts it; no pipeline code does


def module_files() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.relative_to(PACKAGE).parts:  # Alembic scripts, loaded by Alembic
            continue
        parts = ("stock_pipeline", *path.relative_to(PACKAGE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """Every stock_pipeline module `module` imports, wherever the import statement is."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            while name not in known and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in known and name != module:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {module: imported_modules(module, path, set(modules)) for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_lazy_and_relative_imports(tmp_path):
    source = "from .b import x\n\ndef f():\n    import stock_pipeline.c\n    from stock_pipeline import d\n"
    module = tmp_path / "a.py"
    module.write_text(source)
    known = {"stock_pipeline.pkg.a", "stock_pipeline.pkg.b", "stock_pipeline.c", "stock_pipeline.d"}
    found = imported_modules("stock_pipeline.pkg.a", module, known)
    assert found == {"stock_pipeline.pkg.b", "stock_pipeline.c", "stock_pipeline.d"}


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_is_in_a_layer():
    loose = [m for m in module_files() if layer_of(m) is not None and layer_of(m) not in ALLOWED]
    assert loose == [], f"modules outside the layer map (stock_pipeline/__init__.py): {loose}"


def test_imports_go_down_the_layers():
    wrong = []
    for module, imports in import_graph().items():
        layer = layer_of(module)
        for imported in imports:
            target = layer_of(imported)
            if layer is None or target is None or target == layer:
                continue
            if target not in ALLOWED.get(layer, set()):
                wrong.append(f"{module} imports {imported} ({layer} may not use {target})")
            elif target == "simulator" and module not in SIMULATOR_USERS:
                wrong.append(f"{module} imports the simulator, a dev/test tool")
    assert wrong == []


def test_the_layer_rules_themselves_have_no_cycle():
    assert find_cycle({layer: set(uses) for layer, uses in ALLOWED.items()}) is None


def layer_docstring(layer: str) -> str:
    return ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8"))) or ""


def test_every_layer_says_what_it_holds():
    layers = {layer_of(m) for m in module_files()} - {None, "definitions"}
    assert sorted(layer for layer in layers if len(layer_docstring(layer)) < 80) == []
