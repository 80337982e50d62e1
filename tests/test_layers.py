"""comp's layers, read from the sources with ast (nothing is imported).

A module imports from its own layer or lower, never from a higher one, and there are no import cycles
among comp's modules. An import inside a function counts (a lazy import is still an arrow); one under
`if TYPE_CHECKING:` does not (it never runs). A package in LAYERS (data, models, ...) stands for every
module in it; a module that is in no layer fails the test until it is given one.

The run and submission folders are spelled in comp/runs.py alone. A string literal in code spells one
when it is a path: `"runs"` or `"submissions"` given to Path/PurePath/os.path.join/joinpath or joined
with `/`, or a literal (an f-string's text included) that starts with `runs/` or `submissions/` and
holds neither whitespace nor a `<placeholder>`, as a relative path does. Docstrings are not code, and
prose that names a folder for the reader (help, messages, hints: "runs/<name>/config.yaml holds it")
has spaces or placeholders; neither locates a folder, so neither counts.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO

COMP = REPO / "comp"

# Lowest first; the names are modules or packages under comp/ (docs/architecture.md lists the same).
LAYERS = [
    ("__init__", "errors", "io", "console"),  # __init__: the comp package itself
    ("config", "config_files", "device", "env"),
    ("data", "models", "augment", "augment_batch", "metrics", "tasks"),
    ("runs", "tta", "streaming", "blending", "hill", "submission", "trackers"),
    (
        "training",
        "predict",
        "predict_run",
        "predict_seeds",
        "predict_test",
        "evaluate",
        "report",
        "ensemble",
        "leaks",
        "pseudo",
    ),
    ("probe", "kaggle", "kernel", "info", "pipeline"),
    ("cli", "__main__"),  # __main__: python -m comp
]
FOLDER_OWNER = "runs"
FOLDERS = ("runs", "submissions")
PATH_CALLS = {"Path", "PurePath", "PosixPath", "join", "joinpath"}


def module_name(path: Path, root: Path = COMP) -> str:
    """`training.fold` for comp/training/fold.py, `models` for comp/models/__init__.py."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def comp_modules(root: Path = COMP) -> dict[str, Path]:
    return {module_name(path, root): path for path in sorted(root.rglob("*.py"))}


def layer_of(name: str) -> tuple[int, str] | None:
    """(layer, the LAYERS entry that holds it) of a module name; None when it is in no layer."""
    matches = [
        (len(entry), level, entry)
        for level, entries in enumerate(LAYERS)
        for entry in entries
        if name == entry or name.startswith(entry + ".")
    ]
    return max(matches)[1:] if matches else None


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import that can run: module level and inside functions, but not under `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


@dataclass(frozen=True)
class Arrow:
    source: str  # module names, as module_name gives them
    target: str
    line: int

    def where(self, modules: dict[str, Path]) -> str:
        return f"{modules[self.source].relative_to(REPO)}:{self.line}"


def comp_target(dotted: str, modules: dict[str, Path]) -> str | None:
    """The comp module that `import comp.a.b` (or `from comp.a import b`) loads last; None outside comp."""
    parts = dotted.split(".")
    if parts[0] != "comp":
        return None
    parts = parts[1:]
    while parts and ".".join(parts) not in modules:
        parts.pop()  # an attribute of a module, or a namespace package (data/) without __init__.py
    return ".".join(parts) if parts else "__init__"


def arrows_from(name: str, path: Path, modules: dict[str, Path], root: Path = COMP) -> Iterator[Arrow]:
    package = path.relative_to(root).parent.parts
    for node in import_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            dotted = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                kept = package[: len(package) - node.level + 1]
                base = ".".join(["comp", *kept, *([base] if base else [])])
            dotted = [f"{base}.{alias.name}" for alias in node.names]
        for target in {comp_target(d, modules) for d in dotted} - {None, name}:
            yield Arrow(name, target, node.lineno)


def all_arrows() -> tuple[dict[str, Path], list[Arrow]]:
    modules = comp_modules()
    return modules, [arrow for name, path in modules.items() for arrow in arrows_from(name, path, modules)]


def describe(name: str) -> str:
    level, entry = layer_of(name)
    return f"comp.{name} (layer {level}: {entry})"


def test_every_module_has_a_layer():
    missing = [str(path.relative_to(REPO)) for name, path in comp_modules().items() if layer_of(name) is None]
    assert not missing, (
        f"{', '.join(missing)} in no layer: add each (or its package) to LAYERS in tests/test_layers.py "
        "and to the layer list in docs/architecture.md"
    )


def test_no_module_imports_a_higher_layer():
    modules, arrows = all_arrows()
    upward = sorted(
        f"{arrow.where(modules)}: {describe(arrow.source)} imports {describe(arrow.target)}"
        for arrow in arrows
        if layer_of(arrow.source) and layer_of(arrow.target) and layer_of(arrow.target)[0] > layer_of(arrow.source)[0]
    )
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def shortest_cycle(start: str, graph: dict[str, set[str]], within: set[str]) -> list[str]:
    """start -> ... -> start, by breadth-first search inside one strongly connected component."""
    paths = {nxt: [start, nxt] for nxt in graph[start] & within}
    frontier = sorted(paths)
    while start not in paths:
        step = []
        for node in frontier:
            for nxt in sorted(graph[node] & within):
                if nxt not in paths:
                    paths[nxt] = [*paths[node], nxt]
                    step.append(nxt)
        frontier = step
    return paths[start]


def test_no_import_cycles():
    modules, arrows = all_arrows()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    lines: dict[tuple[str, str], Arrow] = {}
    for arrow in sorted(arrows, key=lambda arrow: arrow.line):
        graph[arrow.source].add(arrow.target)
        lines.setdefault((arrow.source, arrow.target), arrow)  # the first import of the pair
    reports = []
    for component in strongly_connected(graph):
        cycle = shortest_cycle(component[0], graph, set(component))
        steps = [lines[pair].where(modules) for pair in zip(cycle, cycle[1:], strict=False)]
        reports.append(
            " -> ".join(f"comp.{name}" for name in cycle)
            + f"  (imports at {', '.join(steps)}; modules in the cycle: {', '.join(component)})"
        )
    assert not reports, "import cycles:\n" + "\n".join(reports)


def test_the_import_reader_sees_lazy_and_relative_imports_and_skips_type_checking(tmp_path):
    root = tmp_path / "comp"
    (root / "training").mkdir(parents=True)
    for name in ("__init__", "errors", "cli", "training/__init__", "training/fold", "training/optim"):
        (root / f"{name}.py").write_text("")
    (root / "training/loop.py").write_text(
        """
from typing import TYPE_CHECKING

import numpy
from comp.errors import CompError
from . import optim
from .. import errors

if TYPE_CHECKING:
    from comp.cli import app
else:
    import comp.training.fold


def later():
    from comp.cli import main
"""
    )
    modules = comp_modules(root)
    arrows = {(a.target, a.line) for a in arrows_from("training.loop", root / "training/loop.py", modules, root)}
    assert arrows == {("errors", 5), ("training.optim", 6), ("errors", 7), ("training.fold", 12), ("cli", 16)}


# ----------------------------------------------------------------------------- the folders' one owner


def docstrings(tree: ast.AST) -> set[int]:
    owners = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, owners)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


FOLDER_PATH = re.compile(rf"(?:{'|'.join(FOLDERS)})/[^\s<>]*")


def is_folder_word(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in FOLDERS


def spelled_folders(tree: ast.AST) -> Iterator[ast.AST]:
    """The literals in `tree` that spell the run or the submission folder as a path (see the module docstring)."""
    skip = docstrings(tree) | {
        id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values
    }
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in PATH_CALLS:
                yield from (arg for arg in node.args if is_folder_word(arg))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            yield from (side for side in (node.left, node.right) if is_folder_word(side))
        elif isinstance(node, ast.JoinedStr):
            text = [part.value for part in node.values if isinstance(part, ast.Constant)]
            first = node.values[0] if node.values else None
            if (
                isinstance(first, ast.Constant)
                and FOLDER_PATH.match(first.value)
                and not any(re.search(r"[\s<>]", piece) for piece in text)
            ):
                yield node
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and FOLDER_PATH.fullmatch(node.value):
            yield node


def found_outside_runs_py(find: Callable[[ast.AST], Iterator[ast.AST]]) -> list[str]:
    """file:line: code, for each node `find` yields in a module other than comp/runs.py."""
    return [
        f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}"
        for name, path in comp_modules().items()
        if name != FOLDER_OWNER
        for node in find(ast.parse(path.read_text()))
    ]


def test_the_run_and_submission_folders_are_spelled_in_runs_py_alone():
    spelled = found_outside_runs_py(spelled_folders)
    assert not spelled, (
        "the run or submission folder spelled outside comp/runs.py (ask comp.runs: RUNS, SUBMISSIONS, run_dir...):\n"
        + "\n".join(spelled)
    )


RUN_FILES = ("cv.json", "classes.json", "config.yaml", "members.json", "oof.parquet", "test.parquet")


def joined_run_files(tree: ast.AST) -> Iterator[ast.AST]:
    """`folder / "cv.json"` and the like: a run file's name joined to a path (comp.runs.cv_file(folder) instead)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            yield from (
                side for side in (node.left, node.right) if isinstance(side, ast.Constant) and side.value in RUN_FILES
            )


def test_the_files_every_run_exposes_are_named_in_runs_py_alone():
    joined = found_outside_runs_py(joined_run_files)
    assert joined == [], "a run's file named outside comp/runs.py (use cv_file, table_file, ...):\n" + "\n".join(joined)


def test_the_folder_rule_finds_paths_and_passes_prose():
    code = """
\"\"\"Writes runs/<name>/oof.parquet.\"\"\"
a = Path("runs")
b = base / "submissions"
c = "runs/" + name
d = f"submissions/{name}.csv"
e = os.path.join("runs", name)
help_text = "Predict this folder of images instead: runs/<name>/predictions/<folder>.csv."
hint = f"Check {path} (comp writes to submissions/)."
record = {"runs": ["a", "b"]}
"""
    found = sorted((node.lineno, ast.unparse(node)) for node in spelled_folders(ast.parse(code)))
    assert found == [
        (3, "'runs'"),
        (4, "'submissions'"),
        (5, "'runs/'"),
        (6, "f'submissions/{name}.csv'"),
        (7, "'runs'"),
    ]
