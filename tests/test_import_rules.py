"""The package rule of docs/design.md: distill/, augment/, corpus/ and contract/ never import pipelines/ or apache_beam.

Each package is imported in a fresh interpreter (another test may already have imported Beam into this one), with
the repository root first on the path, and sys.modules is checked afterwards. Importing distill sets no csv limit.
"""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

BEAM_FREE_PACKAGES = ("contract", "augment", "corpus", "distill")


def _modules(package: str) -> str:
    """Every module of `package`, found on disk (a new module is checked without anyone listing it)."""
    names = sorted(path.stem for path in (ROOT / package).glob("*.py") if path.stem != "__init__")
    assert names, f"no modules found in {package}/"
    return ", ".join([package] + [f"{package}.{name}" for name in names])


CHECK = ("import csv, sys; limit = csv.field_size_limit(); import {modules}; "
         "bad = sorted(m for m in sys.modules if m == 'apache_beam' or m.startswith('apache_beam.') "
         "or m == 'pipelines' or m.startswith('pipelines.') or m == 'tests' or m.startswith('tests.')); "
         "assert not bad, bad; assert csv.field_size_limit() == limit, 'csv.field_size_limit changed at import'")


@pytest.mark.parametrize("package", BEAM_FREE_PACKAGES)
def test_package_imports_neither_beam_nor_pipelines(package):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", CHECK.format(modules=_modules(package))], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]


def test_no_runtime_module_imports_matplotlib():
    """Every figure (report/, the loss curve) is SVG drawn by contract.charts."""
    import ast
    found = []
    for package in ("augment", "contract", "corpus", "distill", "pipelines"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                found += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] == "matplotlib"]
    assert not found, found


def test_one_task_table_with_every_alias():
    from augment.tasks import resolve_task
    from contract.tasks import GLUE_TASKS, canonical_name
    from distill.glue import get_task
    for alias, name in [("sst2", "SST-2"), ("STS_B", "STS-B"), ("mnli-m", "MNLI"), ("mnli-mm", "MNLI"),
                        ("cola", "CoLA")]:
        assert canonical_name(alias) == resolve_task(alias).name == get_task(alias).name == name
    assert set(GLUE_TASKS) == {"CoLA", "SST-2", "MRPC", "STS-B", "QQP", "MNLI", "QNLI", "RTE"}
