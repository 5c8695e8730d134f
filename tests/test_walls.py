"""The house's walls, read from the source with `ast` (imports inside functions count too).

- The library never imports the command line (mpimat.cli), and only
  mpimat/__main__.py (and the console script) start it.
- Strategies never import api (they get a Job).
- The pure modules never import mpi4py.
- No import circle among the library's modules.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mpimat"
STRATEGIES = {"mpimat.tiles", "mpimat.dot", "mpimat.takeover", "mpimat.movement"}
PURE = {"mpimat.partition", "mpimat.panels", "mpimat.model", "mpimat.verify", "mpimat.generate",
        "mpimat.operands", "mpimat.fileio", "mpimat.stats", "mpimat.buffers", "mpimat.compute",
        "mpimat.options", "mpimat.report", "mpimat.calibration", "mpimat.errors", "mpimat.memory",
        "mpimat.shm", "mpimat.kernels", "mpimat.dist.layout", "mpimat.dist.gemm", "mpimat.tempguard"}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path):
    """Every module `path` imports, as absolute dotted names (each `from x import y` also as x.y)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


MODULES = {module_name(p): imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_modules_were_found():
    assert {"mpimat.api", "mpimat.cli", "mpimat.cli.job", "mpimat.tiles", "mpimat.panels"} <= set(MODULES)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_library_never_imports_the_cli(name):
    if name.startswith("mpimat.cli") or name == "mpimat.__main__":
        return
    assert not {i for i in MODULES[name] if i == "mpimat.cli" or i.startswith("mpimat.cli.")}, name


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_strategies_never_import_api(name):
    assert not {i for i in MODULES[name] if i == "mpimat.api" or i.startswith("mpimat.api.")}


@pytest.mark.parametrize("name", sorted(PURE))
def test_pure_modules_never_import_mpi4py(name):
    assert not {i for i in MODULES[name] if i.split(".")[0] == "mpi4py"}


def test_no_import_circle():
    # Edges between mpimat modules (x.y imported as "from x import y" counts when y is a module).
    edges = {m: {i for i in deps if i in MODULES and i != m} for m, deps in MODULES.items()}
    # A package's __init__ importing its own submodules is not a circle.
    for m in edges:
        edges[m] = {d for d in edges[m] if not d.startswith(m + ".")}
    seen, stack, path = set(), set(), []

    def visit(m):
        seen.add(m)
        stack.add(m)
        path.append(m)
        for d in sorted(edges[m]):
            if d in stack:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(d):] + [d]))
            if d not in seen:
                visit(d)
        stack.discard(m)
        path.pop()

    for m in sorted(edges):
        if m not in seen:
            visit(m)
