"""The house rules of imports, read from the source (no module is imported to check them).

    app.py, webui/  ->  inspector  ->  minillama        (benchmarks/ sit beside app.py)

- nothing imports upward: minillama imports none of the others, inspector neither webui nor
  app nor benchmarks, webui neither app nor benchmarks;
- outside minillama, minillama is reached only through its faces: `minillama` (the engine's
  public values and classes) and `minillama.cli` (the command-line toolkit);
- webui, app.py, the CLIs and the benchmarks reach inspector only through `inspector` and its
  rooms' faces (`inspector.views`, ...), never a module inside a room;
- inside inspector: trace/ is the floor (it imports no other room), views/ reads only trace/,
  record/ writes only trace/, debug/ drives record/ and reads trace/; trace/ and views/ never
  import the engine, so a saved trace opens without one;
- no import cycle among modules (imports under `if TYPE_CHECKING:` do not run, so they do not count).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("minillama", "inspector", "webui", "benchmarks")
MINILLAMA_FACES = {"minillama", "minillama.cli"}
ROOMS = ("record", "trace", "debug", "views")
# Which rooms each room may import.
ROOM_READS = {"trace": set(), "views": {"trace"}, "record": {"trace"}, "debug": {"record", "trace"}}
# What trace/ and views/ may take from minillama's face: values, not the engine.
ENGINE_FREE_NAMES = {"SamplingParams", "InvalidRequestError", "MinillamaError", "is_int", "is_finite_real", "MAX_COUNT"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _sources() -> dict[str, Path]:
    files = [ROOT / "app.py", *[p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]]
    return {_module_name(p): p for p in files}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


@cache
def _imports(module: str) -> tuple[tuple[str, tuple[str, ...], bool], ...]:
    """(imported module, names taken from it, runs at import time) for every import statement;
    relative imports resolved. Imports inside functions run later (they cannot make a cycle at
    import time) but still count for the layering rules."""
    path = _sources()[module]
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[tuple[str, tuple[str, ...], bool]] = []

    def visit(node: ast.AST, at_import_time: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for inner in child.orelse:
                    visit(inner, at_import_time)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, (), at_import_time) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.append((base, tuple(alias.name for alias in child.names), at_import_time))
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, at_import_time and not nested)

    visit(tree, True)
    return tuple(found)


def _top(module: str) -> str:
    return module.split(".")[0]


def _ours(module: str) -> bool:
    return _top(module) in (*PACKAGES, "app")


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "inspector" and len(parts) > 1 and parts[1] in ROOMS else None


def _edges() -> list[tuple[str, str, tuple[str, ...]]]:
    """(importer, imported, names) for every import of one of our modules."""
    return [
        (module, target, names)
        for module in _sources()
        for target, names, _ in _imports(module)
        if _ours(target)
    ]


UPWARD = {
    "minillama": {"inspector", "webui", "benchmarks", "app"},
    "inspector": {"webui", "benchmarks", "app"},
    "webui": {"benchmarks", "app"},
    "benchmarks": {"app"},
}


def test_nothing_imports_upward():
    bad = [f"{a} imports {b}" for a, b, _ in _edges() if _top(b) in UPWARD.get(_top(a), set())]
    assert not bad, "\n".join(bad)


def test_minillama_is_reached_only_through_its_faces():
    bad = [
        f"{a} imports {b}"
        for a, b, _ in _edges()
        if _top(b) == "minillama" and _top(a) != "minillama" and b not in MINILLAMA_FACES
    ]
    assert not bad, "\n".join(bad)


def test_consumers_reach_inspector_only_through_its_faces():
    faces = {"inspector", *(f"inspector.{room}" for room in ROOMS)}
    bad = [f"{a} imports {b}" for a, b, _ in _edges() if _top(a) in ("webui", "benchmarks", "app") and _top(b) == "inspector" and b not in faces]
    cli = "inspector.__main__"
    bad += [f"{cli} imports {b}" for a, b, _ in _edges() if a == cli and _top(b) == "inspector" and b not in faces]
    assert not bad, "\n".join(bad)


def test_rooms_import_only_the_rooms_below_them():
    bad = []
    for a, b, _ in _edges():
        room, other = _room(a), _room(b)
        if room is not None and other is not None and other != room and other not in ROOM_READS[room]:
            bad.append(f"{a} ({room}/) imports {b} ({other}/)")
        if room is not None and b == "inspector":
            bad.append(f"{a} imports the inspector face, which imports every room")
    assert not bad, "\n".join(bad)


def test_trace_and_views_never_import_the_engine():
    bad = []
    for a, b, names in _edges():
        if _room(a) in ("trace", "views") and _top(b) == "minillama":
            engine_names = set(names) - ENGINE_FREE_NAMES
            if b != "minillama" or engine_names:
                bad.append(f"{a} imports {b} {sorted(engine_names)}")
    assert not bad, "\n".join(bad)


def _cycle() -> list[str] | None:
    """A cycle among import-time imports between our modules, or None. `from a.b import c`
    depends on a.b, and on a.b.c when c is a module. (A package's __init__ importing its own
    submodules is no cycle: Python has the package half-made by then, and the submodule's
    imports of its siblings resolve.)"""
    sources = _sources()
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module in sources:
        for target, names, at_import_time in _imports(module):
            if not at_import_time or not _ours(target):
                continue
            submodules = [f"{target}.{n}" for n in names if f"{target}.{n}" in sources]
            # `from package import module` needs only the module (and the package, which is
            # already being made when the importer is inside it).
            candidates = submodules if names and len(submodules) == len(names) else [target, *submodules]
            graph[module] |= {c for c in candidates if c in sources and c != module}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, " -> ".join(cycle)


def test_the_engine_free_names_are_on_the_face():
    """The names trace/ and views/ may take must be real exports of minillama's face."""
    import minillama

    assert set(minillama.__all__) >= ENGINE_FREE_NAMES
