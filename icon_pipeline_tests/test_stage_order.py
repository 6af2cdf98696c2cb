"""The stage packages are floors: a module imports from its own package or from lower floors only,
and the modules import each other without a cycle. Every import counts, inside functions and under
TYPE_CHECKING too: a lazy import that climbs a floor is still an arrow the wrong way."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Pipeline order, bottom first; packages on one floor are siblings and do not import each other.
FLOORS: tuple[frozenset[str], ...] = tuple(
    frozenset(floor)
    for floor in (
        {"core"},
        {"library"},
        {"render", "lexicon", "dataset"},
        {"captions", "model"},
        {"search"},
        {"benchmark"},
        {"defs", "apps"},
        {"cli"},
    )
)

# Top-level modules that belong to a stage: the Dagster layer's entry, and the Dagster UI's launcher
# (a command, as cli.py: it starts the webserver over the code location that the runner names).
PART_OF = {"definitions": "defs", "ui": "cli"}


def _modules(package: Path) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (relative imports resolved)."""
    modules = _modules(package)
    graph: dict[str, set[str]] = defaultdict(set)
    for module, (path, is_package) in modules.items():
        here = module.split(".") if is_package else module.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        here[: len(here) - node.level + 1] + ([node.module] if node.module else [])
                    )
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:  # `from pkg.mod import function` -> pkg.mod
                    name = name.rpartition(".")[0]
                if name and name != module:
                    graph[module].add(name)
    return graph


def _stage(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the root package's __init__ has no floor
    return PART_OF.get(parts[1], parts[1])


def stage_order_violations(package: Path, floors: tuple[frozenset[str], ...] = FLOORS) -> list[str]:
    """Every import that climbs a floor or crosses to a sibling, and every stage with no floor."""
    floor_of = {stage: level for level, floor in enumerate(floors) for stage in floor}
    violations = []
    for module, imported in sorted(import_graph(package).items()):
        source = _stage(module)
        for target_module in sorted(imported):
            target = _stage(target_module)
            if source is None or target is None or source == target:
                continue
            for stage in (source, target):
                if stage not in floor_of:
                    violations.append(f"{module}: stage {stage!r} has no floor")
            if source in floor_of and target in floor_of and floor_of[target] >= floor_of[source]:
                direction = "a sibling" if floor_of[target] == floor_of[source] else "a higher floor"
                violations.append(f"{module} imports {target_module} ({direction})")
    return violations


def import_cycles(package: Path) -> list[list[str]]:
    """The modules that import each other in a loop (strongly connected components of size > 1)."""
    graph = import_graph(package)
    index: dict[str, int] = {}
    lowest: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan; the graph is a few hundred modules deep at most
        index[module] = lowest[module] = len(index)
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if target not in index:
                visit(target)
                lowest[module] = min(lowest[module], lowest[target])
            elif target in stack:
                lowest[module] = min(lowest[module], index[target])
        if lowest[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(_modules(package)):
        if module not in index:
            visit(module)
    return cycles


def test_stages_import_only_from_their_own_floor_or_below() -> None:
    assert stage_order_violations(REPO_ROOT / "icon_pipeline") == []


def test_no_module_imports_itself_through_others() -> None:
    assert import_cycles(REPO_ROOT / "icon_pipeline") == []


def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root / "house"


def test_the_checker_names_an_upward_a_sibling_and_a_lazy_import(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "house/__init__.py": "",
            "house/core/__init__.py": "",
            "house/core/config.py": "def load():\n    from house.dataset.augment import Settings\n",
            "house/dataset/__init__.py": "",
            "house/dataset/augment.py": "from house.core.config import load\nfrom ..render import draw\n",
            "house/render/__init__.py": "def draw():\n    pass\n",
            "house/search/__init__.py": "from house.dataset import augment\nfrom house.core import config\n",
        },
    )
    assert stage_order_violations(package) == [
        "house.core.config imports house.dataset.augment (a higher floor)",
        "house.dataset.augment imports house.render (a sibling)",
    ]
    assert import_cycles(package) == [["house.core.config", "house.dataset.augment"]]


def test_the_checker_names_a_stage_with_no_floor(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "house/__init__.py": "",
            "house/core/__init__.py": "",
            "house/attic/__init__.py": "import house.core\n",
        },
    )
    assert stage_order_violations(package) == ["house.attic: stage 'attic' has no floor"]
    assert import_cycles(package) == []


# The Dagster layer's UI groups: one module each, thin asset bodies; an upstream asset is named by
# its key, a helper comes from its owner package (or defs/'s shared modules: metadata, partitions,
# frozen, resources), never from another group's module.
DEFS_GROUPS = ("icons", "captions", "corpus", "dataset", "model", "search", "benchmark")


def test_no_dagster_group_module_imports_another() -> None:
    graph = import_graph(REPO_ROOT / "icon_pipeline")
    groups = {f"icon_pipeline.defs.{name}" for name in DEFS_GROUPS}
    crossings = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module.startswith("icon_pipeline.defs.")
        for target in targets & groups
    )
    assert crossings == []


MAX_DEFS_MODULE_LINES = 350
MAX_ASSET_BODY_LINES = 60  # an asset reads, calls its stage, and says what it made


def test_the_dagster_layer_stays_thin() -> None:
    """Domain code lives in its stage package: no defs/ module over MAX_DEFS_MODULE_LINES lines, no
    asset or asset check body (its docstring aside) over MAX_ASSET_BODY_LINES."""
    long_modules, long_bodies = [], []
    for path in sorted((REPO_ROOT / "icon_pipeline" / "defs").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_DEFS_MODULE_LINES:
            long_modules.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.parse(text).body:
            decorators = [getattr(d, "func", d) for d in getattr(node, "decorator_list", [])]
            if not isinstance(node, ast.FunctionDef) or not any(
                getattr(d, "id", "") in ("asset", "asset_check") for d in decorators
            ):
                continue
            body = node.body[1:] if ast.get_docstring(node) else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1
            if lines > MAX_ASSET_BODY_LINES:
                long_bodies.append(f"{path.name}:{node.name}: {lines} lines")
    assert long_modules == [] and long_bodies == []


def test_every_name_the_package_imports_exists() -> None:
    """Each `from icon_pipeline... import name` (lazy ones inside functions included) names something
    its module has: a name moved to another module fails here, not in the middle of a run."""
    import importlib

    missing = []
    for path in sorted((REPO_ROOT / "icon_pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            if not node.module.startswith("icon_pipeline"):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                if hasattr(module, alias.name):
                    continue
                try:
                    importlib.import_module(f"{node.module}.{alias.name}")
                except ImportError:
                    missing.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert missing == []
