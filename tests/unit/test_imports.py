"""Every module of the package imports first, alone (as a notebook's first line may), without a cycle.

Import cycles hide while the suite imports the package in one order. Here one interpreter loads the
third-party libraries, then forks a child per module, which imports that module first: a module that
only loads after another fails by name. (Forking spares each child torch's and transformers' import.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # a process that forks one child per module

SCRIPT = """
import importlib, os, sys
import datasets, lightning.pytorch, torch, torchmetrics
from transformers import AutoConfig, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase
names = sys.argv[1:]
failed = 0
for name in names:
    pid = os.fork()
    if pid == 0:
        try:
            importlib.import_module(name)
        except BaseException as error:
            print(f"{name}: {type(error).__name__}: {error}", flush=True)
            os._exit(1)
        os._exit(0)
    failed += os.waitpid(pid, 0)[1] != 0
print(f"{len(names)} modules, {failed} failed", flush=True)
"""


def module_names() -> list[str]:
    """Every module of the package, from its files: importing the packages to list them would load them."""
    package = REPO_ROOT / "neobert_tasks"
    names = []
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
def test_every_module_imports_first_in_a_fresh_interpreter():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *module_names()],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(" 0 failed"), result.stdout
