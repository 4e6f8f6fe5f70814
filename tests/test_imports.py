"""The package's import graph has no circle: every import counts, at the top of a module or inside a function
(those run too, later), except the ones under ``if TYPE_CHECKING:``, which never run."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fourdcrystal"


def _modules() -> dict[str, Path]:
    out = {}
    for p in PACKAGE.rglob("*.py"):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return skip


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (a package's ``from . import name`` of a module: that module)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_only(tree)
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom):
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                subs = {f"{target}.{a.name}" for a in node.names} & set(modules)
                deps |= subs if subs else ({target} & set(modules))
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_imports_have_no_circle():
    graph = import_graph()
    assert len(graph) > 40 and "fourdcrystal.prediction.stage" in graph["fourdcrystal.api"]
    assert cycles(graph) == []


def test_the_check_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_physics_modules_import_no_file_or_cli_libraries():
    """The house plan's boundary: the physics (specimens, optics, labels, truth, peaks, lattice) never touches
    h5py, click or tqdm."""
    physics = ["fourdcrystal.specimens.specimen", "fourdcrystal.simulation.optics", "fourdcrystal.simulation.labels",
               "fourdcrystal.simulation.truth", "fourdcrystal.detection.peaks", "fourdcrystal.lattice"]
    modules = _modules()
    for name in physics:
        tree = ast.parse(modules[name].read_text(encoding="utf-8"))
        used = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        used |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level}
        assert not used & {"h5py", "click", "tqdm"}, (name, used & {"h5py", "click", "tqdm"})


def test_importing_every_module_leaves_the_stage_functions_in_place():
    """No submodule is named like a stage function: importing one would replace the function on the package."""
    import importlib
    import pkgutil

    import fourdcrystal

    for m in pkgutil.walk_packages(fourdcrystal.__path__, "fourdcrystal."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    for name in ("select", "supercell", "simulate", "train", "tune", "evaluate", "predict", "strain", "export"):
        assert callable(getattr(fourdcrystal, name)) and getattr(fourdcrystal, name).__module__ == "fourdcrystal.api"
