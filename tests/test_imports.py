"""The package's imports point one way (docs/ARCHITECTURE.md, "Import direction"): no cycle between
modules, no module importing a layer above its own, and the parts that must stay apart stay apart.

Read with `ast`, nothing is imported: every `import` / `from ... import` of every module of fpxint, at
the top or inside a function. A deferred (function-level) import is a dependency all the same: it only
moves a cycle's failure to run time, so it obeys the same rules, with no exemption list. `from pkg import name` counts as an import of
`pkg.name` when that is a module, else of `pkg` (its __init__). Importing `pkg.mod` also runs
`pkg/__init__.py`; that is not counted, or every module would depend on `fpxint/__init__.py`, which
imports the public API from the model layer.
"""
from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fpxint"

# Bottom to top; a module may import its own layer and those below. A module's layer is given by the
# longest pattern that matches its name. independent=True: the layer's modules never import each other.
LAYERS: list[tuple[str, tuple[str, ...], bool]] = [
    ("data and models", ("fpxint.config", "fpxint.zoo", "fpxint.zoo.*", "fpxint.data", "fpxint.imagecache", "fpxint.imagefiles",
                         "fpxint.labelfiles", "fpxint.text", "fpxint.scratch", "fpxint.metrics", "fpxint.progress",
                         "fpxint.atomic"),
     False),
    ("integer bounds, conv geometry", ("fpxint.intbounds", "fpxint.convgeom"), True),
    ("int64 references", ("fpxint.intref",), False),
    ("oneDNN convolution", ("fpxint.onednn",), False),
    ("primitives", ("fpxint.quant", "fpxint.intops"), True),
    ("series kernel", ("fpxint.fused",), False),
    ("tensor series", ("fpxint.series",), False),
    ("exact forward", ("fpxint.exact_forward",), False),
    ("expanded layers", ("fpxint.layers",), False),
    ("BatchNorm folding", ("fpxint.fold",), False),
    ("model", ("fpxint.model",), False),
    ("public API", ("fpxint",), False),
    ("measures", ("fpxint.analysis", "fpxint.cost", "fpxint.basis", "fpxint.export", "fpxint.admission"), True),
    ("uses", ("fpxint.allocation", "fpxint.allocation.*", "fpxint.lm", "fpxint.explain", "fpxint.views"), False),
    ("figures", ("fpxint.plots", "fpxint.plots_*", "fpxint.allocation.plots", "fpxint.reports"), False),
    ("app", ("fpxint.app", "fpxint.app.*"), False),
    ("cli: options", ("fpxint.cli.args",), False),
    ("cli: shared helpers", ("fpxint.cli.common",), False),
    ("cli: language models", ("fpxint.cli.lm",), False),
    ("cli: commands", ("fpxint.cli.*",), True),
    ("cli: entry", ("fpxint.cli.entry",), False),
    ("cli", ("fpxint.cli", "fpxint.__main__"), False),
]
APART = [("fpxint.app", "fpxint.app.*"), ("fpxint.cli", "fpxint.cli.*", "fpxint.__main__")]  # never import each other
STREAMLIT_ONLY_IN = ("fpxint.app", "fpxint.app.*")


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """{dotted name: (file, is a package __init__)} for every .py file under root."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = list(f.relative_to(root.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def _targets(node: ast.Import | ast.ImportFrom, name: str, is_pkg: bool, modules) -> list[str]:
    """The modules of the package that one import statement imports."""
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            here = name.split(".") if is_pkg else name.split(".")[:-1]
            here = here[: len(here) - (node.level - 1)]
            base = ".".join(here + ([node.module] if node.module else []))
        found = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    out = []
    for t in found:
        while t and t not in modules:  # `import fpxint.zoo.paths as p` names a module; `a.b.attr` does not
            t = t.rpartition(".")[0]
        if t:
            out.append(t)
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, dict[str, int]]:
    """{importer: {imported module: line of the first import}} inside the package (self-imports dropped)."""
    modules = _modules(root)
    graph: dict[str, dict[str, int]] = {m: {} for m in modules}
    for name, (path, is_pkg) in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(node, name, is_pkg, modules):
                    if t != name:
                        graph[name].setdefault(t, node.lineno)
    return graph


def third_party(root: Path = PACKAGE) -> dict[str, set[str]]:
    """{module: top-level names of what it imports from outside the package}."""
    out = {}
    for name, (path, _) in _modules(root).items():
        tops = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                tops |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                tops.add(node.module.split(".")[0])
        out[name] = tops - {"fpxint"}
    return out


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _match(name: str, patterns) -> str | None:
    hits = [p for p in patterns if fnmatch.fnmatchcase(name, p)]
    return max(hits, key=len) if hits else None


def layer_of(name: str) -> int | None:
    """Index in LAYERS of the longest pattern matching `name`; None when no layer claims it."""
    best = [(len(p), i) for i, (_, pats, _) in enumerate(LAYERS) if (p := _match(name, pats))]
    return max(best)[1] if best else None


def violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every import against LAYERS / APART, as 'importer:line imports target (why)'."""
    out = []
    for src, targets in sorted(graph.items()):
        ls = layer_of(src)
        for dst, line in sorted(targets.items()):
            ld = layer_of(dst)
            where = f"{src}:{line} imports {dst}"
            if ls is None or ld is None:
                continue  # reported by test_every_module_has_a_layer
            if ld > ls:
                out.append(f"{where} (upward: {LAYERS[ls][0]!r} -> {LAYERS[ld][0]!r})")
            elif ld == ls and LAYERS[ls][2]:
                out.append(f"{where} (layer {LAYERS[ls][0]!r} is independent: its modules never import each other)")
            groups = [i for i, g in enumerate(APART) if _match(src, g)], [i for i, g in enumerate(APART) if _match(dst, g)]
            if groups[0] and groups[1] and groups[0] != groups[1]:
                out.append(f"{where} (the CLI and the app never import each other)")
    return out


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_the_graph_sees_top_level_deferred_and_relative_imports(graph):
    """The reader is not vacuous: edges known from the source are there, of every kind."""
    assert graph["fpxint.layers"]["fpxint.series"]  # from .series import ... (top level)
    assert "fpxint.analysis" in graph["fpxint.cli.common"]  # from ..analysis import logits_of (in a function)
    assert "fpxint.zoo.paths" in graph["fpxint.fused"]  # deferred, two dots up
    assert "fpxint.cli.entry" in graph["fpxint.cli"]  # a package __init__'s relative import
    assert "fpxint.allocation.plots" not in graph["fpxint.allocation"]  # only what is imported
    assert "fpxint" in graph["fpxint.cli.common"]  # from .. import __version__: the package itself
    assert all(not m.startswith("fpxint.fpxint") for t in graph.values() for m in t)


def test_cycle_and_layer_checks_can_fail():
    """The checks on a made-up graph: a cycle hidden in a deferred import and an upward import are found."""
    g = {"fpxint.series": {"fpxint.fused": 95}, "fpxint.fused": {"fpxint.series": 64}, "fpxint.quant": {}}
    assert cycles(g) == [["fpxint.fused", "fpxint.series"]]
    assert any("upward" in v for v in violations(g))
    assert any("independent" in v for v in violations({"fpxint.quant": {"fpxint.intops": 1}}))
    assert any("never import each other" in v for v in violations({"fpxint.app.lm": {"fpxint.cli.args": 3}}))
    assert violations({"fpxint.cli.entry": {"fpxint.cli.args": 1, "fpxint.model": 2}}) == []


def _in_app(cycle: list[str]) -> bool:
    return all(_match(m, STREAMLIT_ONLY_IN) for m in cycle)


def test_no_import_cycle(graph):
    found = [c for c in cycles(graph) if not _in_app(c)]
    assert not found, "import cycles (deferred imports included): " + "; ".join(" <-> ".join(c) for c in found)


def test_no_import_cycle_in_the_app(graph):
    found = [c for c in cycles(graph) if _in_app(c)]
    assert not found, "import cycles in fpxint/app: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_module_has_a_layer(graph):
    missing = [m for m in graph if layer_of(m) is None]
    assert not missing, f"modules in no layer: {missing}; add them to LAYERS here and to docs/ARCHITECTURE.md"


def test_imports_follow_the_documented_direction(graph):
    bad = violations(graph)
    assert not bad, "imports against the layers of docs/ARCHITECTURE.md:\n" + "\n".join(bad)


def test_only_the_app_imports_streamlit():
    users = sorted(m for m, tops in third_party().items() if "streamlit" in tops and not _match(m, STREAMLIT_ONLY_IN))
    assert not users, f"streamlit imported outside fpxint/app: {users}"
