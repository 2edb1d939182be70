"""The package layout: no import cycles between its modules, and the public names in place.

Imports are read from the source (ast), at module level and inside functions alike, so a
function-level import that only dodges a cycle still counts as one. An edge goes from a
module to each package module it names (``from .x import y`` names ``x``, or ``x.y`` when
that is a module); a package's ``__init__`` run implicitly before its modules is not an edge.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import salience as sl

SRC = Path(__file__).resolve().parents[1] / "src"
PUBLIC = ["load_model", "wrap", "load_images", "explain", "evaluate", "Explanation", "Target", "ClassTarget",
          "Model", "Preprocess", "Geometry", "available_methods", "get_explainer", "available_models",
          "SalienceError", "ImageBatch"]


def package_modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package) of every module under ``src/package``."""
    modules = {}
    for path in (src / package).rglob("*.py"):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph(src: Path, package: str) -> dict[str, dict[str, int]]:
    """Module -> {imported package module: line of the first such import}.

    Raises AssertionError for an import of a package module that does not exist.
    """
    modules = package_modules(src, package)
    graph: dict[str, dict[str, int]] = {}
    for name, (path, is_package) in modules.items():
        edges = graph.setdefault(name, {})
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                if base.split(".")[0] != package:
                    continue
                assert base in modules, f"{path}:{node.lineno} imports {base}, which does not exist"
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] != package:
                    continue
                assert target in modules, f"{path}:{node.lineno} imports {target}, which does not exist"
                if target != name:
                    edges.setdefault(target, node.lineno)
    return graph


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import cycle ``[a, b, ..., a]``, or None (depth-first search, deterministic order)."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def describe(cycle: list[str], graph: dict[str, dict[str, int]]) -> str:
    return " -> ".join(f"{a} (line {graph[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_package_has_no_import_cycle():
    graph = import_graph(SRC, "salience")
    assert len(graph) > 100 and "salience.models.adapters.hf_common" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + describe(cycle, graph)


def test_registries_replace_the_former_circles():
    graph = import_graph(SRC, "salience")
    hf_families = {f"salience.models.adapters.{m}" for m in ("hf", "clip", "hf_detectors")}
    assert [(a, b) for a in sorted(hf_families) for b in graph[a] if b in hf_families] == []
    assert sorted(graph["salience.viz"]) == ["salience.preprocessing"]  # draws; knows no Explanation
    assert [m for m in graph["salience.models.checkpoint"] if m.startswith("salience.models.zoo")] == []
    assert "salience.data.scenes" not in graph["salience.data.registry"]


def test_the_cycle_finder_sees_function_level_and_package_imports(tmp_path):
    pkg = tmp_path / "toy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")
    (pkg / "a.py").write_text("from .sub import g\n\ndef f():\n    return g()\n")
    (pkg / "sub" / "__init__.py").write_text("from .b import g\n")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..a import f  # dodges the cycle at run time\n    return f\n")
    graph = import_graph(tmp_path, "toy")
    assert graph["toy"] == {"toy.a": 1} and graph["toy.sub.b"] == {"toy.a": 2}
    assert find_cycle(graph) == ["toy.a", "toy.sub", "toy.sub.b", "toy.a"]
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    assert find_cycle(import_graph(tmp_path, "toy")) is None
    (pkg / "sub" / "b.py").write_text("from ..missing import h\n")
    with pytest.raises(AssertionError, match="toy.missing, which does not exist"):
        import_graph(tmp_path, "toy")


def test_the_public_names_are_exported():
    assert set(PUBLIC) <= set(sl.__all__)
    assert sl.Model is importlib.import_module("salience.models.model").Model
    assert sl.Target is importlib.import_module("salience.targets.base").Target
    assert sl.Explanation is importlib.import_module("salience.explanation").Explanation
    assert [name for name in PUBLIC if not hasattr(sl, name)] == []


def test_the_entry_point_and_the_shipped_weights_are_where_pyproject_says():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((SRC.parent / "pyproject.toml").read_text())
    module, function = project["project"]["scripts"]["salience"].split(":")
    assert callable(getattr(importlib.import_module(module), function))
    from salience.models.zoo.lite_features import WEIGHTS_DIR

    shipped = sorted(p.name for p in WEIGHTS_DIR.glob("*.pt"))
    assert shipped == ["scene-deformable-detr.pt", "scene-detr.pt", "scene-vit.pt"]
    patterns = project["tool"]["setuptools"]["package-data"]["salience"]
    package = SRC / "salience"
    assert any(sorted(p.name for p in package.glob(pattern)) == shipped for pattern in patterns)
