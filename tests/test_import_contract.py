"""The house's import rules, read from the source with `ast` (nothing is imported).

Every `.py` file under the folders that `setup.cfg` maps into the `detseg` namespace is
parsed; every `import` / `from ... import` in it counts, at module level or inside a
function (a function-level import still runs, and still ties the rooms together).
Relative imports are resolved against the file's package, and literal
`importlib.import_module("...")` calls count too. Imports under `if TYPE_CHECKING:` obey
the room rules but make no cycle (they never run).

Checked:
- the room rules (ALLOWED below, the design's "house" table): which room may import which,
  and that nothing imports the command line (`detseg.cli`) but `detseg/__main__.py`
  and the command line itself;
- the same rules for what an import into another room RUNS: its package `__init__`s and
  their module-level imports (`pipelines` may use `detseg.models.ops`, so importing it
  must not load the model families through `models/__init__.py`);
- no import cycles between modules (each cycle is reported as a chain of module names,
  each link with the file and line that makes it);
- no import of a top-level `data`, `models`, ... : since the rooms install as `detseg.*`,
  such an import would pick up whatever `data/` folder the user's working directory has.

A failure lists every violation, one per line, as `file:line -> imported module`.
"""

from __future__ import annotations

import ast
import configparser
from collections import deque
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Module prefix -> room: a module belongs to the room of its longest matching prefix
# (`detseg` alone is the package's own __init__). A new folder under detseg/ must be added.
ROOM_OF_PREFIX = {
    "detseg": "root",
    "detseg.__main__": "main",
    "detseg.core": "core",
    "detseg.cli": "cli",
    "detseg.workflows": "workflows",
    "detseg.configs": "configs",
    "detseg.data": "data",
    "detseg.pipelines": "pipelines",
    "detseg.models": "models",
    "detseg.evaluation": "evaluation",
    "detseg.serving": "serving",
    "detseg.training": "training",
}
EVERYTHING = ("detseg",)
# Room -> the module prefixes of detseg it may import (third-party code is not checked).
ALLOWED = {
    # `import detseg` must stay cheap: the package itself may load the core at most.
    "root": ("detseg.core",),
    "main": ("detseg.cli",),
    "core": ("detseg.core",),
    "configs": ("detseg.core",),
    "data": ("detseg.core", "detseg.data"),
    "pipelines": ("detseg.core", "detseg.data", "detseg.models.ops", "detseg.pipelines"),
    "models": ("detseg.core", "detseg.models"),
    "evaluation": ("detseg.core", "detseg.data", "detseg.evaluation"),
    "serving": ("detseg.core", "detseg.models", "detseg.serving"),
    "training": ("detseg.core", "detseg.data", "detseg.pipelines", "detseg.models",
                 "detseg.evaluation", "detseg.training"),
    "workflows": EVERYTHING,  # anything but the command line (below)
    "cli": EVERYTHING,
}
# Who may import the command line at all, whatever ALLOWED says.
CLI = "detseg.cli"
CLI_IMPORTERS = ("main", "cli")
# Top-level names the rooms had before they moved under `detseg.`.
STALE_TOP_LEVEL = ("data", "pipelines", "models", "training", "evaluation", "serving", "configs")


@dataclass(frozen=True)
class Import:
    """One import statement's target, resolved to a dotted name."""

    source: str  # importing module
    path: Path  # its file
    line: int
    target: str  # imported module (or the longest known module that contains the name)
    in_function: bool
    type_checking_only: bool = False  # under `if TYPE_CHECKING:`: never runs, so no cycle

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def package_dirs() -> dict[str, Path]:
    """setup.cfg's `package_dir`: dotted package name -> folder."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    mapping = {}
    for line in config["options"]["package_dir"].strip().splitlines():
        name, folder = (part.strip() for part in line.split("=", 1))
        mapping[name] = REPO / folder
    return mapping


def source_modules() -> dict[str, Path]:
    """Every module under the mapped folders: dotted name -> file."""
    modules: dict[str, Path] = {}
    mapping = package_dirs()
    for package, folder in mapping.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [package, *relative.parts]
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            # A folder mapped on its own (e.g. detseg.data -> data/) wins over a same-named
            # folder found by walking its parent's folder.
            if any(name == other or name.startswith(other + ".") for other in mapping
                   if len(other) > len(package) and mapping[other] != folder):
                continue
            modules[name] = path
    return modules


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(module: str, path: Path, level: int, name: str | None) -> str:
    base = _package_of(module, path).split(".")
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _known(name: str, modules: dict[str, Path]) -> str:
    """The longest known module that `name` is or lies in (`name` itself if none)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return name


def _function_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes that lie inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for child in ast.walk(node):
                if child is not node:
                    inside.add(id(child))
    return inside


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes under `if TYPE_CHECKING:` (or `typing.TYPE_CHECKING`)."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and (
                (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
                or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")):
            for statement in node.body:
                inside.update(id(child) for child in ast.walk(statement))
    return inside


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_function = _function_nodes(tree)
    type_only = _type_checking_nodes(tree)
    found: list[Import] = []

    def add(node: ast.AST, target: str) -> None:
        found.append(Import(module, path, node.lineno, target, id(node) in in_function,
                            id(node) in type_only))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.module == "__future__":
                continue
            base = (_resolve_relative(module, path, node.level, node.module) if node.level
                    else node.module)
            for alias in node.names:
                # `from pkg import sub` imports the submodule pkg.sub when there is one.
                submodule = f"{base}.{alias.name}"
                add(node, submodule if alias.name != "*" and submodule in modules else base)
        elif (isinstance(node, ast.Call) and _is_import_module_call(node.func)
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            add(node, node.args[0].value)
    return found


def _is_import_module_call(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "import_module"
    return isinstance(func, ast.Name) and func.id in ("import_module", "__import__")


@lru_cache(maxsize=1)  # read once per test session; callers do not modify the result
def all_imports() -> tuple[dict[str, Path], list[Import]]:
    modules = source_modules()
    found = [imp for name, path in modules.items() for imp in imports_of(name, path, modules)]
    return modules, found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def room_of(module: str) -> str | None:
    """The room a module lies in; None for a module no room claims (`detseg.<new folder>`)."""
    matches = [prefix for prefix in ROOM_OF_PREFIX if _within(module, prefix) and prefix != "detseg"]
    if matches:
        return ROOM_OF_PREFIX[max(matches, key=len)]
    return ROOM_OF_PREFIX.get(module)


def _describe(imp: Import) -> str:
    kind = " (inside a function)" if imp.in_function else ""
    return f"{imp.where()} -> {imp.target}{kind}"


def room_violations(modules: dict[str, Path], found: list[Import]) -> list[str]:
    problems = []
    for name in sorted(modules):
        if room_of(name) is None:
            problems.append(f"{modules[name].relative_to(REPO)}: module {name} is in no room: "
                            f"add its package to ROOM_OF_PREFIX and ALLOWED in this test")
    for imp in found:
        # `detseg` itself (its __init__) loads nothing, so importing it is always allowed.
        if not _within(imp.target, "detseg") or imp.target == "detseg":
            continue
        room = room_of(imp.source)
        if _within(imp.target, CLI) and room not in CLI_IMPORTERS:
            problems.append(f"{_describe(imp)}: nothing but detseg/__main__.py and the command "
                            f"line itself imports the command line")
        elif room in ALLOWED and not any(_within(imp.target, allowed) for allowed in ALLOWED[room]):
            allowed = ", ".join(prefix for prefix in ALLOWED[room] if prefix != imp.source)
            problems.append(f"{_describe(imp)}: room '{room}' may import only {allowed}")
    return problems


def stale_imports(found: list[Import]) -> list[str]:
    return [f"{_describe(imp)}: a top-level '{imp.target.split('.')[0]}' is the user's folder, "
            f"not detseg's; import detseg.{imp.target}"
            for imp in found if imp.target.split(".")[0] in STALE_TOP_LEVEL]


def import_graph(modules: dict[str, Path], found: list[Import]) -> dict[str, dict[str, Import]]:
    """module -> {imported module: the first import that makes the link}; detseg's own only."""
    graph: dict[str, dict[str, Import]] = {name: {} for name in modules}
    for imp in found:
        target = _known(imp.target, modules)
        if target in modules and target != imp.source and not imp.type_checking_only:
            graph[imp.source].setdefault(target, imp)
    return graph


def _ancestors(module: str) -> list[str]:
    """Packages Python initializes before `module`, outermost first (`detseg` left out)."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(2, len(parts))]


def executed_by_import(target: str, modules: dict[str, Path],
                       graph: dict[str, dict[str, Import]]) -> dict[str, str]:
    """Every module that `import target` runs, each with how it gets there.

    Python runs the target's package `__init__`s first, then the target, and in each
    module its module-level imports (function-level ones only run when called).
    Returns {module: the link that first reached it}.
    """
    reached: dict[str, str] = {}
    queue: deque[str] = deque()

    def reach(module: str, how: str) -> None:
        for package in _ancestors(module):
            if package in modules and package not in reached:
                reached[package] = f"{how}, which first runs {modules[package].relative_to(REPO)}"
                queue.append(package)
        if module in modules and module not in reached:
            reached[module] = how
            queue.append(module)

    reach(_known(target, modules), "the import itself")
    while queue:
        module = queue.popleft()
        for imported, imp in sorted(graph[module].items()):
            if not imp.in_function:
                reach(imported, f"{imp.where()} -> {imported}")
    return reached


def transitive_room_violations(modules: dict[str, Path], found: list[Import]) -> list[str]:
    """An allowed import into another room must not run, through package `__init__`s or its
    own imports, modules the importing room may not import (pipelines -> models.ops only)."""
    graph = import_graph(modules, found)
    problems: dict[tuple[str, str], str] = {}
    cache: dict[str, dict[str, str]] = {}
    for imp in found:
        room = room_of(imp.source)
        if (not _within(imp.target, "detseg") or imp.target == "detseg" or room not in ALLOWED
                or room_of(imp.target) == room  # inside the room: its own imports are checked
                or not any(_within(imp.target, allowed) for allowed in ALLOWED[room])):
            continue  # third-party, inside the room, or already reported by the direct rules
        if imp.target not in cache:
            cache[imp.target] = executed_by_import(imp.target, modules, graph)
        own = set(_ancestors(imp.source))  # already initialized when `imp` runs
        # The target's parent packages must run (Python initializes them first); only what
        # their `__init__` imports in turn counts against the importing room.
        own |= set(_ancestors(imp.target))
        outside = sorted(module for module in cache[imp.target] if module not in own
                         and not any(_within(module, allowed) for allowed in ALLOWED[room]))
        if outside:
            examples = "; ".join(f"{module} ({cache[imp.target][module]})" for module in outside[:2])
            problems[(imp.where(), imp.target)] = (
                f"{_describe(imp)}: room '{room}' may import only {', '.join(ALLOWED[room])}, but this "
                f"import also runs {len(outside)} module(s) outside them, e.g. {examples}")
    return list(problems.values())


def strongly_connected(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def _shortest_cycle(graph: dict[str, dict[str, Import]], start: str, members: set[str]) -> list[str]:
    """Shortest chain start -> ... -> start inside one component (breadth first)."""
    previous: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child not in members:
                continue
            if child == start:
                chain = [node]
                while chain[-1] != start:
                    chain.append(previous[chain[-1]])
                return [*reversed(chain), start]
            if child not in previous:
                previous[child] = node
                queue.append(child)
    raise AssertionError(f"{start} lies in a component but on no cycle")


def cycles(graph: dict[str, dict[str, Import]]) -> list[list[str]]:
    """For each module on a cycle, the shortest cycle through it (rotations counted once)."""
    chains: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        members = set(component)
        for start in component:
            chain = _shortest_cycle(graph, start, members)
            body = chain[:-1]
            smallest = body.index(min(body))
            key = tuple(body[smallest:] + body[:smallest])
            if key not in seen:
                seen.add(key)
                chains.append(chain)
    return chains


def describe_cycle(graph: dict[str, dict[str, Import]], chain: list[str]) -> str:
    links = [f"    {_describe(graph[a][b])}" for a, b in zip(chain, chain[1:])]
    return " -> ".join(chain) + "\n" + "\n".join(links)


def _report(title: str, problems: list[str]) -> str:
    return f"{len(problems)} {title}:\n" + "\n".join(problems)


def test_the_mapped_folders_have_modules_and_imports():
    modules, found = all_imports()
    assert "detseg.core" in modules and "detseg.cli" in modules and "detseg.models.ops" in modules
    assert any(_within(imp.target, "detseg") for imp in found)


def test_rooms_import_only_what_the_house_allows():
    modules, found = all_imports()
    problems = room_violations(modules, found)
    assert not problems, _report("import(s) break the room rules of the house", problems)


def test_allowed_imports_run_only_allowed_modules():
    """What an import runs counts, package `__init__`s included: `pipelines` may use
    `detseg.models.ops`, so importing it must not load the model families."""
    modules, found = all_imports()
    problems = transitive_room_violations(modules, found)
    assert not problems, _report("import(s) that load modules their room may not import", problems)


def test_no_import_of_the_old_top_level_names():
    _, found = all_imports()
    problems = stale_imports(found)
    assert not problems, _report("import(s) of a top-level room name", problems)


def test_no_import_cycles():
    modules, found = all_imports()
    graph = import_graph(modules, found)
    chains = cycles(graph)
    assert not chains, _report("import cycle(s), each with the lines that make it",
                               [describe_cycle(graph, chain) for chain in chains])


def test_the_checker_sees_a_cycle_through_a_function_level_import():
    """The checker itself, on a hand-made graph: a -> b at module level, b -> a in a function."""
    here = Path(__file__)
    graph = {
        "a": {"b": Import("a", here, 1, "b", False)},
        "b": {"a": Import("b", here, 2, "a", True), "c": Import("b", here, 3, "c", False)},
        "c": {},
    }
    assert cycles(graph) == [["a", "b", "a"]]
    assert "(inside a function)" in describe_cycle(graph, ["a", "b", "a"])


def test_the_reader_resolves_relative_function_level_and_type_only_imports(tmp_path):
    source = tmp_path / "heads.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import losses\n"
        "from ..ops.boxes import iou\n"
        "if TYPE_CHECKING:\n"
        "    from detseg.training.config import TrainConfig\n"
        "def build():\n"
        "    import detseg.core.contract as contract\n"
        "    return importlib.import_module('detseg.models.necks')\n")
    modules = {name: source for name in ("detseg.models.yolo.heads", "detseg.models.yolo.losses",
                                         "detseg.models.ops.boxes", "detseg.models.necks")}
    found = imports_of("detseg.models.yolo.heads", source, modules)
    seen = {(imp.line, imp.target, imp.in_function, imp.type_checking_only) for imp in found}
    assert seen == {
        (1, "typing", False, False),
        (2, "detseg.models.yolo.losses", False, False),
        (3, "detseg.models.ops.boxes", False, False),
        (5, "detseg.training.config", False, True),
        (7, "detseg.core.contract", True, False),
        (8, "detseg.models.necks", True, False),
    }
    graph = import_graph(modules, found)
    assert set(graph["detseg.models.yolo.heads"]) == {
        "detseg.models.yolo.losses", "detseg.models.ops.boxes", "detseg.models.necks"}
