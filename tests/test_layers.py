"""The layers of docs/architecture.md, held to the code: every import of an mpidec module
(a lazy one inside a function included) points to a lower layer or stays in its own, and
no modules import each other in a cycle. Read from the source (``ast``): nothing is imported."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mpidec"

# lowest first; a module belongs to the first entry that is its name or a package holding it
LAYERS = [
    ("mpidec", "mpidec.runtime", "mpidec.signals", "mpidec.atomic"),     # process hygiene
    ("mpidec.spectral", "mpidec.topology", "mpidec.bipartite", "mpidec.netmodel"),  # graphs, no MPI
    ("mpidec.comm",),                                                    # communication
    ("mpidec.consensus", "mpidec.optim"),                                # algorithms
    ("mpidec.figures", "mpidec.plan", "mpidec.selfcheck", "mpidec.train",
     "mpidec.cli", "mpidec.__main__"),                                   # application
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(name: str, path: Path, known) -> set[str]:
    """The mpidec modules ``name`` imports (``from package import module`` counts as the module)."""
    base = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                root = ".".join(base.split(".")[:len(base.split(".")) - node.level + 1])
                module = f"{root}.{module}" if module else root
            subs = {f"{module}.{alias.name}" for alias in node.names} & known
            found.update(subs or {module})
    return {m for m in found if m in known and m != name}


def layer(name: str) -> int:
    owners = [(len(owner), index) for index, owners in enumerate(LAYERS) for owner in owners
              if name == owner or name.startswith(owner + ".")]
    assert owners, f"{name} is in no layer: add it to LAYERS here and to docs/architecture.md"
    return max(owners)[1]  # the most specific entry


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_imports_point_down_the_layers():
    upward = [f"{name} ({layer(name)}) imports {target} ({layer(target)})"
              for name, targets in graph().items() for target in sorted(targets) if layer(target) > layer(name)]
    assert not upward, upward


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles of ``edges`` (module -> modules it imports); a package importing one of
    its own modules that imports the package back (its namespace) is none of interest."""
    edges = {name: {t for t in targets if not (t.startswith(name + ".") and name in edges.get(t, ()))}
             for name, targets in edges.items()}
    state, found = {}, []

    def visit(name, path):
        state[name] = "open"
        for target in sorted(edges.get(name, ())):
            if state.get(target) == "open":
                found.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    return found


def test_no_import_cycle():
    assert not cycles(graph()), [" -> ".join(cycle) for cycle in cycles(graph())]


def test_the_checks_see_lazy_imports_and_cycles():
    """Imports inside functions count (lazy imports hid a cycle once); a cycle through three
    modules is found, a package and its own module are not a cycle."""
    path = PACKAGE / "optim" / "base.py"
    assert "mpidec.comm" in imports("mpidec.optim.base", path, set(modules()))  # inside __init__
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"p": {"p.m"}, "p.m": {"p"}}) == []
    assert layer("mpidec.comm.mpi") == 2 and layer("mpidec.train.loop") == 4 and layer("mpidec") == 0
