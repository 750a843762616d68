"""The layering of docs/ARCHITECTURE.md, checked on the source: each package imports only the
packages below it, core/ imports nothing of ours and no torch, and no module imports itself
back through others (no import cycles). Imports inside functions count too: a lazy import is
still a dependency; one under `if TYPE_CHECKING:` counts for the layers but not as a cycle.
The check reads the source with `ast`; nothing is imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Bottom to top: a package may import the packages listed before it (and itself).
LAYERS = ["core", "samplers", "grids", "pipeline", "report", "sweeps", "ui", "cli", "app"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under `if TYPE_CHECKING:` (names for type checkers, not run)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return out


def _imports(path: Path, modules: set[str], runtime_only: bool = False) -> set[str]:
    """The modules of ours that `path` imports, at the top or inside a function
    (`from pkg import name` counts pkg.name when that is a module, else pkg); with
    `runtime_only`, not those imported only for type checkers."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_only(tree) if runtime_only else set()
    found = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            base = node.module or ""
            found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    out = set()
    for name in found:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        if name in modules:
            out.add(name)
    return out


def _graph(runtime_only: bool = False) -> dict[str, set[str]]:
    """{module: the modules of ours it imports} over the layered packages and scripts."""
    files = []
    for layer in LAYERS:
        folder = ROOT / layer
        files += list(folder.rglob("*.py")) if folder.is_dir() else [ROOT / f"{layer}.py"]
    modules = {_module_name(p): p for p in files}
    return {name: _imports(path, set(modules), runtime_only) - {name} for name, path in modules.items()}


def test_each_package_imports_only_the_layers_below_it():
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    wrong = [f"{module} imports {target}"
             for module, targets in _graph().items() for target in targets
             if rank[target.split(".")[0]] > rank[module.split(".")[0]]]
    assert wrong == []


def test_no_import_cycles():
    graph = _graph(runtime_only=True)  # a type checker's import is not a cycle Python runs into
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert cycles == []


def test_core_needs_neither_torch_nor_the_rest_of_the_project():
    code = ("import sys, core, core.axes, core.cells, core.limits, core.progress; "
            "print(sorted(m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
            "('torch', 'PIL', 'samplers', 'grids', 'pipeline', 'report', 'ui')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
