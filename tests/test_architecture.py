"""The package's layering (docs/architecture.md): imports point one way, never into the CLI,
and no two modules import each other, directly or through others.

Every import statement counts, at module level or inside a function, since a lazy import
still ties the two modules together.
"""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dcf"

#: layer of each top-level part of the package; a module may import its own subpackage and
#: any part of a lower layer, never one of the same or a higher layer.
LAYERS = {"_ext": 0, "errors": 0, "files": 1, "rotations": 1, "parallel": 1,
          "descriptors": 2, "models": 3, "data": 3,
          "training": 4, "dynamics": 4, "analysis": 4, "bench": 5, "cli": 6}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def library_modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, name: str, known) -> set[str]:
    """The dcf modules that `path` (module `name`) imports anywhere in its body."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != "dcf" and m != name}


def import_graph() -> dict[str, set[str]]:
    known = library_modules()
    return {name: imports_of(path, name, known) for name, path in known.items()}


def part(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_every_part_has_a_layer():
    parts = {part(m) for m in library_modules()} - {"", "__main__"}
    assert parts <= set(LAYERS), f"give {sorted(parts - set(LAYERS))} a layer in LAYERS"


def test_library_never_imports_the_cli():
    bad = [(m, d) for m, deps in import_graph().items() if part(m) not in ("cli", "__main__")
           for d in deps if part(d) == "cli"]
    assert not bad, f"library modules import the CLI: {bad}"


def test_imports_point_down_the_layers():
    bad = []
    for m, deps in import_graph().items():
        if part(m) in ("", "__main__"):
            continue
        for d in deps:
            if part(d) != part(m) and LAYERS[part(d)] >= LAYERS[part(m)]:
                bad.append(f"{m} -> {d}")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = import_graph()
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_cycle_and_a_cli_import(tmp_path):
    """The walk itself works: relative and absolute imports, nested ones included."""
    pkg = tmp_path / "dcf"
    (pkg / "cli").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from dcf.b import g\n")
    (pkg / "b.py").write_text("from . import a\nimport dcf.cli\n")
    known = {module_name_in(pkg, p): p for p in pkg.rglob("*.py")}
    assert imports_of(pkg / "a.py", "dcf.a", known) == {"dcf.b"}
    assert imports_of(pkg / "b.py", "dcf.b", known) == {"dcf.a", "dcf.cli"}


def module_name_in(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("statement", [
    "import dcf",
    "from dcf import FingerprintSpec, featurize, neighbor_list, load_model, DCFModel, "
    "BPModel, ModelCalculator, FeatureStore",
    "from dcf.training import train_dcf, train_bp",
    "import dcf.cli; dcf.cli.build_parser()",
])
def test_public_api_imports_without_tensorflow(statement):
    code = f"import sys; {statement}; assert 'tensorflow' not in sys.modules, 'tensorflow'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
