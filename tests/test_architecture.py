"""The shape of the code: attncost's modules import each other without cycles and never reach into
another module's private names. The graph is read from the installed package's source, with
relative imports resolved and imports inside functions counted too (a lazy import is still a
dependency)."""

import ast
import importlib.util
from pathlib import Path

PACKAGE = "attncost"
SUBPACKAGES = ("costmodel", "profiler", "cli", "reports")  # installed from top-level folders (pyproject.toml)


def _modules() -> dict:
    """module name -> source file, for every module of the installed package."""
    out: dict = {}
    todo = [PACKAGE] + [f"{PACKAGE}.{s}" for s in SUBPACKAGES]
    while todo:
        pkg = todo.pop()
        spec = importlib.util.find_spec(pkg)
        for folder in spec.submodule_search_locations or []:
            for f in sorted(Path(folder).iterdir()):
                if f.name == "__init__.py":
                    out[pkg] = f
                elif f.suffix == ".py":
                    out[f"{pkg}.{f.stem}"] = f
                elif (f / "__init__.py").exists() and f"{pkg}.{f.name}" not in todo + list(out):
                    todo.append(f"{pkg}.{f.name}")
    return out


def _imports(name: str, path: Path, modules: dict) -> list:
    """(imported module, imported name or None) for each import in ``path`` that targets attncost."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith(PACKAGE)]
        elif isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else (node.module or "")
            if not base.startswith(PACKAGE):
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.append((sub, None) if sub in modules else (base, a.name))
    return found


def _graph() -> tuple:
    modules = _modules()
    edges: dict = {m: set() for m in modules}
    private = []
    for name, path in modules.items():
        for target, imported in _imports(name, path, modules):
            if target != name and target in modules:
                edges[name].add(target)
            if imported and imported.startswith("_") and not imported.startswith("__"):
                private.append(f"{name} imports {imported} from {target}")
    return modules, edges, private


def _cycles(edges: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    modules, edges, _ = _graph()
    assert {"attncost.costmodel.estimate", "attncost.cli.predict", "attncost.reports.fmt"} <= set(modules)
    assert "attncost.costmodel.estimate" in edges["attncost.cli.predict"] or any(
        "attncost.costmodel" in t for t in edges["attncost.cli.predict"])


def test_no_import_cycles():
    _, edges, _ = _graph()
    assert _cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_names_cross_modules():
    _, _, private = _graph()
    assert private == []
