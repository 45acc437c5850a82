"""The check of tests/conftest.py that keeps ``-m "not slow"`` quick: a test without the ``slow`` marker
may not start a Python process or build the command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning.pytorch.cli  # noqa: F401 (the check patches the command line only once it is imported)
import pytest
from lightning.pytorch.cli import LightningCLI

from tests.conftest import _refusing_slow_work


def test_starting_a_python_process_fails_the_test_and_says_to_mark_it_slow():
    with _refusing_slow_work("tests/x.py::test_y"), pytest.raises(pytest.fail.Exception) as failure:
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    assert str(failure.value).startswith("tests/x.py::test_y starts a Python process ([")
    assert "mark it @pytest.mark.slow" in str(failure.value)
    with _refusing_slow_work("tests/x.py::test_y"), pytest.raises(pytest.fail.Exception):
        subprocess.run("python3 -c pass", shell=True, check=True)
    pip = Path(sys.executable).with_name("pip")  # a console script of this environment runs Python too
    with _refusing_slow_work("tests/x.py::test_y"), pytest.raises(pytest.fail.Exception):
        subprocess.run([pip, "--version"], check=True)


def test_other_programs_may_run():
    with _refusing_slow_work("tests/x.py::test_y"):
        assert subprocess.run(["true"], check=True).returncode == 0


def test_building_the_command_line_fails_the_test_and_says_to_mark_it_slow():
    with _refusing_slow_work("tests/x.py::test_y"), pytest.raises(pytest.fail.Exception) as failure:
        LightningCLI(args=["--help"], run=False)
    message = str(failure.value)
    assert message.startswith("tests/x.py::test_y runs the command line: mark it @pytest.mark.slow")


def test_the_check_is_undone_after_the_block():
    # This test runs under the check too (it is not slow): the block must give back what was there.
    before = subprocess.Popen.__init__, LightningCLI.__init__
    with _refusing_slow_work("tests/x.py::test_y"):
        assert (subprocess.Popen.__init__, LightningCLI.__init__) != before
    assert (subprocess.Popen.__init__, LightningCLI.__init__) == before
