"""The layers' rules, checked on the source tree (issue #14).

* ``hapcore`` has one sub-package per stage, named as in ``tasks/`` and the flow, each with a
  docstring saying what the stage does and an ``__all__`` of its entry points;
* ``hapcore`` imports neither Prefect nor hapsim, not even inside a function (an AST walk of
  every import statement) and not transitively (a fresh interpreter that imports every hapcore
  module has neither in ``sys.modules``);
* ``hapcore`` reads no environment variable; no hapcore module is over 600 lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HAPCORE = ROOT / "hapcore"
STAGES = ("obset", "wcs", "align", "drizzle", "catalogs", "quality")
FORBIDDEN = ("prefect", "hapsim", "tasks", "flows")


def _modules() -> list[Path]:
    return sorted(HAPCORE.rglob("*.py"))


def _imported_names(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_one_sub_package_per_stage_with_its_entry_points():
    packages = sorted(p.parent.name for p in HAPCORE.glob("*/__init__.py"))
    assert packages == sorted(STAGES)
    for stage in STAGES:
        init = ast.parse((HAPCORE / stage / "__init__.py").read_text())
        assert ast.get_docstring(init) and len(ast.get_docstring(init)) > 80, stage
        exported = [n for n in init.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", "") == "__all__" for t in n.targets)]
        assert exported, f"hapcore/{stage}/__init__.py has no __all__"
    for task_module in ("obset", "align", "drizzle", "catalogs", "quality"):
        assert (ROOT / "tasks" / f"{task_module}.py").is_file()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hapcore_module_rules(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 600, f"{path.name}: {len(text.splitlines())} lines"
    tree = ast.parse(text)
    for name in _imported_names(tree):
        assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
            raise AssertionError(f"{path.name}:{node.lineno} reads the environment")


def test_hapcore_does_not_pull_in_prefect_or_hapsim():
    code = ("import importlib, pkgutil, sys, hapcore\n"
            "for m in pkgutil.walk_packages(hapcore.__path__, 'hapcore.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in %r))" % (FORBIDDEN,))
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
