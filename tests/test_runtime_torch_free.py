"""runtime/ serves without torch: importing any of its modules must not even try to import torch."""

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
