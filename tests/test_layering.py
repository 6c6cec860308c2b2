"""The package's layering: stages side by side over one foundation, no stage importing a stage above it.

Every ``import embedkit...`` in the source counts, the lazy ones inside functions too (a lazy import
hides a dependency from start-up time, not from the design). Read from the source with ``ast``: nothing
is imported, so the test takes well under a second.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "embedkit"
#: the command-line code lives in the top-level cli/ folder and is installed as embedkit.cli (pyproject.toml)
CLI = REPO / "cli"

#: bottom first; a stage may import only stages of lower layers (and itself): one layer's stages are peers
LAYERS = (
    ("errors", "defaults", "words"),
    ("atomic", "checks", "stats", "device", "io", "versions"),
    ("splits",),  # reads split files through io
    ("estimators", "models", "render"),
    ("store",),
    ("runner", "inspect", "finetune", "view"),
    ("retrieve",),
    ("classify",),
    ("serve",),  # a long-running search service over stores, models and maps
    ("cli",),
    ("__main__", "__init__"),  # `python -m embedkit`, and the package face (names handed on lazily)
)
LAYER = {stage: i for i, names in enumerate(LAYERS) for stage in names}
#: cycles that exist by design, each closed only by an import inside a function: the zoo registers the
#: built-in backbones when the registry is first asked (and needs the weights module for one of them)
LAZY_BY_DESIGN = [{"embedkit.models.registry", "embedkit.models.zoo", "embedkit.models.weights"}]


def _module(path: Path) -> str:
    root, prefix = (CLI, ("embedkit", "cli")) if path.is_relative_to(CLI) else (PACKAGE, ("embedkit",))
    return ".".join(prefix + path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")


def _sources() -> list[Path]:
    """Every source file of the installed package: embedkit/ and the cli/ folder that becomes embedkit.cli."""
    return sorted([*PACKAGE.rglob("*.py"), *CLI.rglob("*.py")])


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports() -> list[tuple[str, str, int]]:
    """``(importer, imported module, line)`` of every embedkit import in the package."""
    modules = {_module(p) for p in _sources()}
    out = []
    for path in _sources():
        me = _module(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from embedkit import device` imports a module; `from embedkit import __version__` the root
                names = [node.module + "." + a.name if node.module + "." + a.name in modules else node.module
                         for a in node.names]
            else:
                continue
            out += [(me, n, node.lineno) for n in names if n.startswith("embedkit.")]
    return out


def test_every_stage_has_a_layer():
    stages = {_stage(_module(p)) for p in _sources()}
    assert stages - set(LAYER) == set(), "a new stage: give it its place in LAYERS"


def test_no_stage_imports_a_stage_above_it_or_beside_it():
    wrong = [f"{a} (line {line}) imports {b}" for a, b, line in imports()
             if _stage(a) != _stage(b) and LAYER[_stage(b)] >= LAYER[_stage(a)]]
    assert wrong == []


def test_no_import_cycle_except_the_lazy_ones_by_design():
    graph: dict[str, set] = {}
    for a, b, _ in imports():
        if a != b:
            graph.setdefault(a, set()).add(b)
    # strongly connected components (Tarjan), iteratively small: the package has ~120 modules
    index, low, stack, on, comps = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in list(graph):
        if v not in index:
            visit(v)
    assert [c for c in comps if c not in LAZY_BY_DESIGN] == []


def test_the_layering_test_sees_lazy_imports():
    """The checks would pass vacuously if the import scan missed the imports inside functions."""
    found = {(a, b) for a, b, _ in imports()}
    assert ("embedkit.models.registry", "embedkit.models.zoo") in found  # inside a function
    assert ("embedkit.retrieve.queries", "embedkit.runner.local") in found  # inside a function
    assert ("embedkit.view.backends", "embedkit.device") in found  # `from embedkit import device`


def test_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme[readme.index("## Layout"):]
    layout = layout[:layout.find("\n## ", 1)] if "\n## " in layout[1:] else layout
    rows = {line.split("|")[1].strip(" `/"): line for line in layout.splitlines() if line.startswith("| `")}
    missing = []
    for folder in sorted([*(p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()), CLI]):
        for mod in sorted(folder.glob("*.py")):
            if mod.stem != "__init__" and f"`{mod.stem}`" not in rows.get(folder.name, ""):
                missing.append(f"{folder.name}/{mod.name}")
    missing += [p.name for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__") and p.stem not in layout]
    assert missing == []


def test_the_package_list_names_every_package_and_installs_no_top_level_cli():
    """pyproject lists the packages (cli/ is mapped to embedkit.cli): a new sub-package must be listed, or a
    wheel would leave it out; and the CLI is `embedkit.cli`, never a top-level `cli` in site-packages."""
    import tomllib

    conf = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    folders = {_module(p.parent / "__init__.py") for p in _sources() if p.name == "__init__.py"}
    assert set(conf["packages"]) == folders and "cli" not in conf["packages"]
    assert conf["package-dir"] == {"embedkit.cli": "cli"}
    import embedkit.cli.main

    assert Path(embedkit.cli.main.__file__).resolve().parent == CLI
