"""The house rules of the code base (issue 15), checked on the source itself.

- no import cycles between fedstat's modules (a cycle hides which layer owns what);
- no module imports another module's private ``_name``, and no code reads another object's
  ``_attribute`` (only ``self``'s and ``cls``');
- the analyses (``fedstat.stats``) never import the file formats: formats read results;
- modules stay under 800 lines;
- no ``id()`` at all: as a cache key it outlives its object (an id is reused after garbage
  collection, so one job could read another's entry).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fedstat", "coordinator", "site_agent")
MAX_LINES = 800


def _sources() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            rel = path.relative_to(ROOT).with_suffix("")
            if "wire" in rel.parts:  # protoc output
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run, at module level or in functions (not those under
    ``if TYPE_CHECKING``, for annotations only)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                found.append(node)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                visit(node.orelse)
            else:
                visit([c for c in ast.iter_child_nodes(node) if isinstance(c, ast.stmt)])

    visit(tree.body)
    return found


def _targets(node: ast.Import | ast.ImportFrom, mods: dict[str, Path], this: str) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in mods}
    base = node.module or ""
    if node.level:  # relative import
        pkg = this.split(".")
        if mods[this].name != "__init__.py":
            pkg = pkg[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join([*pkg, base] if base else pkg)
    out = {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods}
    if base in mods and len(out) < len(node.names):
        out.add(base)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _sources()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(node, mods, name)
        graph[name] = edges - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
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
            strong(v)
    return out


def _is_package_init(a: str, b: str) -> bool:
    """A package's ``__init__`` re-exporting its submodules, which import each other by full path."""
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles_between_modules():
    graph = _graph()
    # a package's __init__ importing its own submodules is not a cycle between concepts
    pruned = {a: {b for b in bs if not _is_package_init(a, b)} for a, bs in graph.items()}
    assert _cycles(pruned) == []


def test_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_a_private_name_of_another():
    mods = _sources()
    offenders = []
    for name, path in mods.items():
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                offenders += [
                    f"{name} imports {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
    assert offenders == []


def test_analyses_never_import_file_formats():
    offenders = [
        f"{a} imports {b}"
        for a, bs in _graph().items()
        if a.startswith("fedstat.stats")
        for b in bs
        if b.startswith("fedstat.formats") or b.startswith("fedstat.report")
    ]
    assert offenders == []


def test_modules_stay_under_800_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_cache_keyed_by_id():
    """No ``id(obj)`` at all: as a cache key it outlives its object, and a dead object's id is reused."""
    offenders = []
    for name, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "id"
                and len(node.args) == 1
            ):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_no_code_reads_another_objects_private_attributes():
    """``obj._field`` only on ``self`` / ``cls``: another object's private state is not an interface
    (argparse's ``_SubParsersAction`` is the type argparse's own API returns)."""
    allowed = {"argparse._SubParsersAction"}
    offenders = []
    for name, path in _sources().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")):
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            if ast.unparse(node) not in allowed:
                offenders.append(f"{name}:{node.lineno} {ast.unparse(node)}")
    assert offenders == []
