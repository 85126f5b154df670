"""The layer contract (pyproject.toml, DESIGN.md) and the package's import hygiene, checked on every run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "riskscope"


def test_layer_contract_is_kept():
    """import-linter's layers contract: cli > pipeline > report > analyses > data > hooks > models > helpers."""
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("import-linter is not installed (it comes with the dev extra)")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_import_cycles_between_modules():
    """No two modules of riskscope import each other, directly or through others."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("riskscope")
    modules = sorted(m for m in graph.modules if m.startswith("riskscope."))
    cycles = []
    for m in modules:
        for other in graph.find_modules_directly_imported_by(m):
            if other.startswith("riskscope.") and other != m and not _is_package_of(other, m) \
                    and graph.chain_exists(importer=other, imported=m):
                cycles.append((m, other))
    assert not cycles, f"import cycles: {cycles[:10]}"


def _is_package_of(pkg: str, module: str) -> bool:
    # a module importing its own package's __init__ (re-exports) is not a cycle of concepts
    return module.startswith(pkg + ".")


def _private_imports(path: Path) -> list[str]:
    """``from riskscope.<pkg>._private import ...`` (or the relative form) reaching into another package."""
    rel = path.relative_to(SRC.parent)
    own = rel.parts[1] if len(rel.parts) > 2 else None
    bad = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.module is None:
            continue
        if node.level:
            base = list(rel.parent.parts)[: len(rel.parent.parts) - (node.level - 1)]
            parts = base + node.module.split(".")
        else:
            parts = node.module.split(".")
        if parts[0] != "riskscope" or len(parts) < 3:
            names = [a.name for a in node.names]
            if parts[0] == "riskscope" and len(parts) == 2 and parts[1] != own:
                bad += [f"{'.'.join(parts)}.{n}" for n in names if n.startswith("_") and n != "__version__"]
            continue
        pkg, mod = parts[1], parts[2]
        if pkg != own and mod.startswith("_"):
            bad.append(".".join(parts))
        if pkg != own:
            bad += [f"{'.'.join(parts)}.{a.name}" for a in node.names if a.name.startswith("_")]
    return bad


def test_no_module_reaches_a_private_name_of_another_package():
    found = {str(p.relative_to(SRC)): b for p in SRC.rglob("*.py") if (b := _private_imports(p))}
    assert not found, found


def test_import_riskscope_does_not_import_torch():
    code = "import sys, riskscope; assert 'torch' not in sys.modules, 'torch imported'; print(riskscope.__version__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
