"""The layers of DESIGN.md: every import points down, and no module takes part in a cycle.

Every import counts, lazy ones inside functions included: a lazy import is still a
dependency. The cycle check is the shared tool CI's reviewers run
(``python ../shared/tools/import_cycles.py .``).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# package -> the project packages it may import (DESIGN.md's layers, bottom to top)
ALLOWED = {
    "records": set(),
    "features": {"records"},
    "models": {"records"},
    "core": {"records", "features", "models"},
    "pipelines": {"records", "features", "models", "core"},
    "shardforge": {"records", "features", "models", "core", "pipelines"},
    "airflow_dags": {"records", "features", "models", "core", "pipelines", "shardforge"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        upward = (_imports(path) & set(ALLOWED)) - ALLOWED[package] - {package}
        assert not upward, f"{path.relative_to(ROOT)} imports {sorted(upward)} (a layer above it)"


def test_no_import_cycles():
    tool = ROOT.parent / "shared" / "tools" / "import_cycles.py"
    assert tool.is_file(), f"{tool} is missing: CI checks out ../shared beside the project"
    out = subprocess.run([sys.executable, str(tool), "."], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.stdout.strip().endswith("import cycles: 0"), out.stdout + out.stderr
