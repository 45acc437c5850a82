"""Shared test fixtures: the ``../shared`` data folder, tiny NeoBERT configs, offline mode; and the check
that keeps the ``slow`` marker honest.

``python -m pytest -m "not slow"`` is the quick inner loop (a couple of minutes on two cores). Tests that
run the command line (in-process included), start a Python process (``python -m neobert_tasks``, a DDP
rank, a notebook kernel, a compile worker) or execute a notebook must be marked ``slow``: a test without
the marker that does either fails with a message saying so.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

# Nothing in the test suite may reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Torch on one thread (here, in the DDP ranks and subprocesses) unless OMP_NUM_THREADS says otherwise: the
# tests' tiny models gain nothing from a second thread, and on a busy machine two threads wait on each other
# (the suite ran about 10% faster on two shared cores). Set before anything imports torch.
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = (REPO_ROOT / ".." / "shared").resolve()


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``, skipping the test with a reason when it is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared benchmark data only exists on the project's machines")
    return path


def tiny_config_kwargs(**overrides) -> dict:
    """Keyword arguments of a 2-layer, 64-wide NeoBERT with the real vocabulary size."""
    kwargs = dict(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_length=512,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tokenizer_path() -> Path:
    """The real bert-base-uncased tokenizer from ``../shared``."""
    return shared_path("tokenizers", "bert-base-uncased")


SLOW_HINT = "mark it @pytest.mark.slow, so that `pytest -m 'not slow'` stays the quick inner loop"


def _starts_python(command) -> bool:
    """Whether ``command`` runs a Python interpreter, or a console script of this environment."""
    program = command[0] if isinstance(command, (list, tuple)) else str(command).split()[0]
    program = os.fspath(program)
    in_this_environment = os.path.dirname(program) == os.path.dirname(sys.executable)
    return program == sys.executable or os.path.basename(program).startswith("python") or in_this_environment


@contextlib.contextmanager
def _refusing_slow_work(nodeid: str):
    """Within the block, starting a Python process or building the command line fails the test."""
    start_process = subprocess.Popen.__init__

    def popen(self, args, *rest, **kwargs):
        if _starts_python(args):
            self._child_created = False  # for Popen.__del__, which runs on this half-built object
            pytest.fail(f"{nodeid} starts a Python process ({args!r}): {SLOW_HINT}.", pytrace=False)
        start_process(self, args, *rest, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(subprocess.Popen, "__init__", popen))
        if "lightning" in sys.modules:  # else nothing imported at collection could build the command line
            import lightning.pytorch.cli as cli

            def refuse_cli(self, *args, **kwargs):
                pytest.fail(f"{nodeid} runs the command line: {SLOW_HINT}.", pytrace=False)

            stack.enter_context(mock.patch.object(cli.LightningCLI, "__init__", refuse_cli))
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Setup, call and teardown of a test not marked slow run under `_refusing_slow_work` (module fixtures
    that a test without the marker sets up first included)."""
    if item.get_closest_marker("slow") is not None:
        yield
        return
    with _refusing_slow_work(item.nodeid):
        yield
