"""The package's shape: no import cycles (function-level imports included) and imports point down
the layers of docs/architecture.md. Read from the source with ast, so it needs no runtime."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "harness"

#: docs/architecture.md's layers; a module may import its own layer or lower ones
LAYERS = {
    0: ("errors", "config", "registry", "jit", "jsonfile", "progress", "fileio", "folders"),
    1: ("preprocess", "imagefile", "onnx_model", "declared_shapes", "timing", "modes", "row", "extra_inputs", "decode",
        "identity"),
    2: ("profiles", "evaluate", "data", "targets", "canvases", "results", "precision", "envinfo", "demo"),
    3: ("pipeline", "measurement", "runner", "npu", "fidelity", "quant", "sensitivity"),
    4: ("report",),
    5: ("cli", "__main__"),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_block(node) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """harness modules imported anywhere in the file (not under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]

    def visit(node):
        if _type_checking_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("harness"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if base.startswith("harness"):
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules}


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    graph = {}
    for name, path in files.items():
        # importing a submodule runs its packages' __init__ first, but that is the package's own
        # business (a package importing its submodules is not a cycle of the submodule)
        graph[name] = {m for m in imports_of(path, modules) if m != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else module
    for layer, names in LAYERS.items():
        if top in names:
            return layer
    raise AssertionError(f"module {module} is in no layer of docs/architecture.md: add it to LAYERS and the doc")


def _packages_of(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def test_no_import_cycles():
    graph = import_graph()
    # a package __init__ importing its own submodules is how a registry or a package API works;
    # a cycle is two modules needing each other
    found = [c for c in cycles({k: {m for m in v if k not in _packages_of(m) and m not in _packages_of(k)}
                                for k, v in graph.items()})]
    assert found == [], f"import cycles: {found}"


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_point_down_the_layers():
    graph = import_graph()
    upward = sorted((m, dep) for m, deps in graph.items() for dep in deps
                    if m.count(".") and dep.count(".") and layer_of(dep) > layer_of(m))
    assert upward == [], f"modules importing a higher layer: {upward}"


@pytest.mark.slow
@pytest.mark.parametrize("module", sorted(m for m in import_graph() if not m.endswith("__main__")))  # __main__ runs the CLI
def test_every_module_imports_alone(module):
    """In a fresh interpreter each module imports by itself (no order-dependent imports)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
