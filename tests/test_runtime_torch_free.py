"""runtime/ serves without torch: importing any of its modules must not even try to import torch."""

import ast
import subprocess
import sys
from pathlib import Path

# Runs in a fresh interpreter, so that nothing other tests imported can hide an import. The finder
# records every attempt to import torch, so a guarded `try: import torch` is caught as well, with
# or without torch installed.
IMPORT_EVERY_RUNTIME_MODULE = """
import importlib, pkgutil, sys

class RecordTorchImports:
    attempts = []

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "torch":
            self.attempts.append(name)
        return None

sys.meta_path.insert(0, RecordTorchImports())

def check(module_name):
    if RecordTorchImports.attempts or "torch" in sys.modules:
        sys.exit(f"importing {module_name} imports torch")

import runtime
check("runtime")
for module in pkgutil.walk_packages(runtime.__path__, prefix="runtime."):
    importlib.import_module(module.name)
    check(module.name)
"""


def test_no_runtime_module_imports_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_RUNTIME_MODULE],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


# The stages above the runtime: it serves what they produce and never calls into them.
STAGES_ABOVE_RUNTIME = {"training", "export", "benchmarks", "kmcorrect", "torch"}


def imported_roots(source: str) -> set[str]:
    """The top-level package of every import in ``source``, wherever it sits: module level,
    inside functions, under ``try`` (relative imports name no package and are left out)."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            roots.add(str(node.args[0].value).split(".")[0])
    return roots


def test_the_scan_sees_imports_wherever_they_are() -> None:
    source = (
        "import os\n"
        "def f():\n    from training.checkpoint import load\n"
        "try:\n    import export.build as b\nexcept ImportError:\n    pass\n"
        "importlib.import_module('benchmarks.common')\n"
        "from . import sibling\n"
    )
    assert imported_roots(source) == {"os", "training", "export", "benchmarks"}


def test_no_runtime_module_imports_a_stage_above_it() -> None:
    root = Path(__file__).resolve().parent.parent
    found = {
        str(path.relative_to(root)): sorted(imported_roots(path.read_text()) & STAGES_ABOVE_RUNTIME)
        for path in sorted((root / "runtime").rglob("*.py"))
    }
    assert len(found) > 20  # the scan did read the runtime
    assert {path: roots for path, roots in found.items() if roots} == {}
