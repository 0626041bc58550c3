"""The architecture as code: imports run one way (import-linter contracts in pyproject.toml), no module imports
itself back through others, and the public fixtures are typed. docs/architecture.md describes the layout."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pytest_wsgi502"


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    r = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 broken" in r.stdout, r.stdout


def test_no_import_cycles_between_modules():
    """Module-level cycles (a imports b imports ... a), lazy imports inside functions included; imports under
    ``if TYPE_CHECKING:`` are annotations, not dependencies at run time."""
    import grimp

    graph = grimp.build_graph("pytest_wsgi502", exclude_type_checking_imports=True, cache_dir=None)
    modules = sorted(graph.modules)
    cycles = []
    for module in modules:
        for imported in graph.find_modules_directly_imported_by(module):
            chain = graph.find_shortest_chain(importer=imported, imported=module)
            if chain:
                cycles.append(" -> ".join((module, *chain)))
    assert not cycles, "\n".join(sorted(set(cycles)))


def test_public_fixtures_are_typed():
    """Every fixture a user can request says what it returns (no ``-> Any``, no missing annotation)."""
    tree = ast.parse((PACKAGE / "fixtures.py").read_text())
    untyped = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef):
            continue
        is_fixture = any("fixture" in ast.unparse(d) for d in node.decorator_list)
        if is_fixture and (node.returns is None or "Any" in ast.unparse(node.returns)):
            untyped.append(f"{node.name} -> {ast.unparse(node.returns) if node.returns else '(none)'}")
    assert not untyped, untyped
