"""The runtime's import graph, read with ``ast`` (nothing is imported or run).

Rules, each a user-visible promise of the layout (README "Repository layout"):
- no import of torch, ``limbseg_rt.models`` or ``limbseg_rt.export`` anywhere in ``runtime/``;
- no import cycle between runtime modules (imports inside functions count: a cycle there still
  ties two modules together);
- no import of another module's private (``_name``) attribute or module;
- each sub-package imports only from the layers below it along the data path, so a file's folder
  tells what it may touch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNTIME = Path(__file__).resolve().parents[2] / "runtime"
PREFIX = "limbseg_rt.runtime"

# What each top-level part of runtime/ may import (besides itself). The base modules (errors,
# hashing) come first; api/ sits on top and may use everything; the DICOM service and cohort
# layers sit on top of api.
BASE = {"errors", "hashing"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "hashing": set(),
    "model": BASE,
    "io": BASE | {"model"},
    "engine": BASE | {"model", "io"},
    "inference": BASE | {"model"},
    "report": BASE | {"model", "io"},
    "phantom": BASE | {"model", "io"},
    "analysis": BASE | {"model", "io", "inference"},
    "qc": BASE | {"model", "io", "report", "analysis"},
    "api": BASE | {"model", "io", "engine", "inference", "report", "phantom", "analysis", "qc"},
    "cohort": BASE | {"model", "io", "report", "api", "qc", "analysis"},
    "service": BASE | {"model", "io", "report", "api"},
    "tuning": BASE | {"model", "engine", "report", "api", "phantom"},
}
FORBIDDEN_TOP = ("torch", "limbseg_rt.models", "limbseg_rt.export")


def _module_name(path: Path) -> str:
    rel = path.relative_to(RUNTIME).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PREFIX, *parts])


def _imports(path: Path) -> list[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, None, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.extend((mod, alias.name, node.lineno) for alias in node.names)
    return found


def _graph() -> dict[str, list[tuple[str, str | None, int]]]:
    return {_module_name(p): _imports(p) for p in sorted(RUNTIME.rglob("*.py"))}


def _part(module: str) -> str:
    return module[len(PREFIX) + 1 :].split(".")[0] if module != PREFIX else ""


def _resolve(graph: dict, mod: str, name: str | None) -> str | None:
    """The runtime module an import refers to (``from pkg import sub`` is the module ``pkg.sub``)."""
    if name and f"{mod}.{name}" in graph:
        return f"{mod}.{name}"
    return mod if mod in graph else None


def test_the_runtime_tree_is_what_the_layout_says():
    parts = {_part(m) for m in _graph()} - {""}
    assert parts <= set(ALLOWED), f"runtime/ has parts the layout does not know: {sorted(parts - set(ALLOWED))}"
    for must in ("io", "model", "engine", "inference", "report", "phantom", "api", "errors"):
        assert must in parts


def test_no_torch_models_or_export_anywhere_in_the_runtime():
    bad = [
        f"{m}:{line} imports {mod}"
        for m, imports in _graph().items()
        for mod, _, line in imports
        if any(mod == f or mod.startswith(f + ".") for f in FORBIDDEN_TOP)
    ]
    assert not bad, "\n".join(bad)


def test_no_private_names_are_imported_across_modules():
    graph = _graph()
    bad = []
    for m, imports in graph.items():
        for mod, name, line in imports:
            target = _resolve(graph, mod, name)
            if target is None or target == m:
                continue
            private_module = any(part.startswith("_") and part != "__init__" for part in target.split("."))
            private_name = name is not None and name.startswith("_") and f"{mod}.{name}" not in graph
            if private_module or private_name:
                bad.append(f"{m}:{line} imports {mod}.{name}")
    assert not bad, "\n".join(bad)


def test_each_part_imports_only_the_layers_below_it():
    graph = _graph()
    bad = []
    for m, imports in graph.items():
        part = _part(m)
        for mod, name, line in imports:
            target = _resolve(graph, mod, name)
            if target is None:
                continue
            tpart = _part(target)
            if tpart and tpart != part and tpart not in ALLOWED.get(part, set()):
                bad.append(f"{m}:{line} imports {target} ({part}/ may use {sorted(ALLOWED.get(part, set()))})")
    assert not bad, "\n".join(bad)


def test_there_is_no_import_cycle():
    graph = _graph()
    edges = {
        m: sorted({t for mod, name, _ in imports if (t := _resolve(graph, mod, name)) and t != m})
        for m, imports in graph.items()
    }
    # A package's __init__ is imported by every module below it; an import *of* a package is an
    # edge to its __init__, which is fine as long as that __init__ does not import back.
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in edges:
        if node not in state and (cycle := visit(node)):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_cycle_a_private_import_and_a_layer_violation(tmp_path):
    """The rules above can fail: a fake runtime tree with one of each fault trips every check."""
    fake = tmp_path / "runtime"
    (fake / "model").mkdir(parents=True)
    (fake / "engine").mkdir()
    for pkg in ("", "model", "engine"):
        (fake / pkg / "__init__.py").write_text("")
    (fake / "errors.py").write_text("")
    (fake / "model" / "a.py").write_text("from limbseg_rt.runtime.engine.b import run\n")
    (fake / "engine" / "b.py").write_text("from limbseg_rt.runtime.model.a import _helper\nimport torch\n")
    real = globals()["RUNTIME"]
    globals()["RUNTIME"] = fake
    try:
        for check in (
            test_no_torch_models_or_export_anywhere_in_the_runtime,
            test_no_private_names_are_imported_across_modules,
            test_each_part_imports_only_the_layers_below_it,
            test_there_is_no_import_cycle,
        ):
            with pytest.raises((AssertionError, pytest.fail.Exception)):
                check()
    finally:
        globals()["RUNTIME"] = real
