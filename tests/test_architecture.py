"""The package's shape: no import cycles (function-level imports included) and imports point down
the layers of docs/architecture.md. Read from the source with ast, so it needs no runtime."""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "harness"

#: docs/architecture.md's layers; a module may import its own layer or lower ones
# Each folder of harness/ is one part of the data flow; a folder's modules may sit in different layers
# (targets/timing.py is the clock every target uses). The longest dotted prefix decides.
LAYERS = {
    0: ("core",),
    1: ("images", "model", "targets.timing", "targets.modes", "targets.figures", "measure.row",
        "measure.identity", "decode", "machine"),
    2: ("profiles", "measure.evaluate", "data", "targets", "measure.results",
        "measure.envinfo", "precision"),
    3: ("measure", "profiles.match", "npu", "fidelity", "quant", "sensitivity", "cluster"),
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
                submodules = {f"{base}.{a.name}" for a in node.names} & modules
                found.update(submodules)
                if len(submodules) < len(node.names):  # a name of the package itself, not only its submodules
                    found.add(base)
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
    name = module.split(".", 1)[1] if "." in module else module
    best = None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
                best = (prefix, layer)
    if best is None:
        raise AssertionError(f"module {module} is in no layer of docs/architecture.md: add it to LAYERS and the doc")
    return best[1]


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


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def base_distributions() -> set[str]:
    """The distributions the base install brings: pyproject's [project].dependencies and, recursively,
    what each of them requires (markers evaluated here, extras only where a requirement asks for them)."""
    import importlib.metadata

    from packaging.requirements import Requirement

    roots = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    todo = [Requirement(r) for r in roots]
    seen: set[str] = {"harness"}
    while todo:
        requirement = todo.pop()
        name = _canonical(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.distribution(requirement.name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: importing it fails anyway
        for text in requires:
            needed = Requirement(text)
            extras = [""] + sorted(requirement.extras)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e}) for e in extras):
                todo.append(needed)
    return seen


@functools.cache
def outside_base_install() -> tuple[str, ...]:
    """Top-level import names installed here (extras, test tools) that no base-install distribution provides
    (cached: reading every installed distribution's file list takes about a second)."""
    import importlib.metadata

    base = base_distributions()
    names = importlib.metadata.packages_distributions()
    return tuple(sorted(name for name, dists in names.items()
                        if not any(_canonical(d) in base for d in dists) and name not in sys.stdlib_module_names))


#: third-party packages of the base install imported once before the forks (top-level names only, so
#: no submodule a harness module forgot to import is there by accident); harness modules never are
PRELOADED = ("numpy", "onnx", "pandas", "matplotlib", "openvino", "onnxruntime", "pycocotools", "rich", "click", "PIL")

#: one interpreter where modules installed here but outside the base install raise ModuleNotFoundError;
#: it imports PRELOADED, then forks one child per harness module, so each child imports its module alone
#: (nothing of harness loaded before it) without paying the third-party imports again. Prints
#: {module: error} as JSON.
BASE_ONLY = """
import importlib, importlib.abc, json, os, sys
blocked, modules, preloaded = (a.split(",") if a else [] for a in sys.argv[1:4])
blocked = set(blocked)

class OutsideBaseInstall(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r} in the base install (installed here by an extra)",
                                      name=name)
        return None

sys.meta_path.insert(0, OutsideBaseInstall())
for name in preloaded:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # then the child that needs it reports it
failures = {}
for module in modules:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module(module)
            message = ""
        except BaseException as exc:
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode()[:4000])
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if message or status:
        failures[module] = message or f"the importing process died (status {status})"
print(json.dumps(failures))
"""


def import_failures(modules, preloaded=PRELOADED) -> dict[str, str]:
    import json
    import subprocess

    proc = subprocess.run([sys.executable, "-c", BASE_ONLY, ",".join(outside_base_install()), ",".join(modules),
                           ",".join(preloaded)], capture_output=True, text=True, timeout=600, cwd=PACKAGE.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_module_imports_alone_in_the_base_install():
    """Each module under harness/ imports by itself in a fresh process (no order-dependent imports), with
    only the base install's packages importable: what an extra (nncf, TensorRT, cuda-python,
    faster-coco-eval, ...) or the test tools provide must be imported inside the function that needs it."""
    modules = sorted(m for m in import_graph() if not m.endswith("__main__"))  # __main__ runs the CLI
    failures = import_failures(modules)
    assert failures == {}, "\n".join(f"{m}: {e}" for m, e in failures.items())


def test_the_base_install_check_refuses_an_extras_module():
    """The check can fail: a module of an extra installed here is refused in the base-install interpreter,
    and a module of the base install is not."""
    blocked = outside_base_install()
    assert "pytest" in blocked and "numpy" not in blocked and "cv2" not in blocked
    failures = import_failures(["pytest", "harness.core.errors"], preloaded=())
    assert list(failures) == ["pytest"] and "ModuleNotFoundError" in failures["pytest"] and "base install" in failures["pytest"]


def test_the_package_root_is_folders():
    """`ls harness` reads as the data flow: each part in its folder, the root holds only the entry points."""
    root_modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert root_modules == ["__init__.py", "__main__.py"], root_modules
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert {name for layer in LAYERS.values() for name in layer if "." not in name} - {"__main__"} <= folders


def test_no_two_folders_import_each_other():
    """At folder level the package is a one-way flow (targets/ never reaches back into measure/ ...)."""
    def folder(module: str) -> str:
        return module.split(".")[1] if module.count(".") else module

    edges = {(folder(m), folder(d)) for m, deps in import_graph().items() for d in deps
             if m.count(".") and d.count(".") and folder(m) != folder(d)}
    both_ways = sorted((a, b) for a, b in edges if (b, a) in edges and a < b)
    assert both_ways == [], both_ways
