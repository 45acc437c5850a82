"""``bench.gpu_session run``, the one call a session makes when it is lent a GPU, checked here without one.

The GPU machine runs it unattended against a time budget, so a command it builds that its script refuses,
or a step whose time limit does not hold, would cost the session's only try. Here the two commands it runs
are parsed by their scripts' own argument parsers, and its time limit is run for real.
"""

from __future__ import annotations

import shlex
import sys

import pytest

from bench import fine_tuning, gpu_check, gpu_session


@pytest.fixture
def recorded_run(tmp_path, monkeypatch):
    """Run ``gpu_session.run`` over a fake carry folder, recording the wheel install and the two steps
    instead of running them; returns (exit status, pip commands, {step name: (command, seconds)})."""
    carry = tmp_path / "carry"
    (carry / "wheels").mkdir(parents=True)
    (carry / "wheels" / "omegaconf-2.3.0-py3-none-any.whl").write_bytes(b"")
    (carry / "if_too_old").mkdir()
    (carry / "if_too_old" / "pyarrow-99.0.0-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(b"")
    (carry / "if_too_old" / "requirements.json").write_text('{"pyarrow": ">=1.0"}')  # met here
    monkeypatch.setattr(gpu_session, "CARRY", carry)
    monkeypatch.setattr(gpu_session, "IF_TOO_OLD_WHEELS", carry / "if_too_old")
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setenv("PYTHONPATH", "")  # run() extends it; monkeypatch restores it
    installs: list[list[str]] = []
    steps: dict[str, tuple[list[str], int]] = {}
    monkeypatch.setattr(gpu_session.subprocess, "run", lambda command, check: installs.append(command))

    def record(name, command, seconds, out):
        steps[name] = (command, seconds)
        return 0

    monkeypatch.setattr(gpu_session, "step", record)
    status = gpu_session.run(gpu_session.parse_arguments(["run"]))
    return status, installs, steps, carry


def script_arguments(command: list[str], script: str) -> list[str]:
    """The arguments after ``python -m <script>``, checking that the command runs that script."""
    assert command[:3] == [sys.executable, "-m", script], shlex.join(command)
    return command[3:]


def test_run_installs_the_carried_wheels_without_an_index_then_runs_both_steps(recorded_run):
    status, installs, steps, carry = recorded_run
    assert status == 0
    (install,) = installs
    assert "--no-index" in install and install[-1].endswith("omegaconf-2.3.0-py3-none-any.whl")
    assert not any("pyarrow" in argument for argument in install)  # the installed one is recent enough
    assert install[install.index("--target") + 1] == str(carry / "site")
    assert list(steps) == ["gpu_check", "fine_tuning"]
    # Both limits together leave the machine's start (1-2 min) inside the device tool's 15 minutes.
    assert sum(seconds for _, seconds in steps.values()) <= 9 * 60


def test_the_commands_run_parse_with_their_scripts_parsers(recorded_run):
    _, _, steps, carry = recorded_run
    check = gpu_check.parse_arguments(script_arguments(steps["gpu_check"][0], "bench.gpu_check"))
    assert check.json.endswith("gpu_check.json")
    fit = fine_tuning.parse_arguments(script_arguments(steps["fine_tuning"][0], "bench.fine_tuning"))
    assert fit.device == "cuda" and fit.shapes == ["base"] and fit.precisions == ["bf16"]
    assert fit.steps == 200 and set(fit.routes) == set(gpu_session.FIT_ROUTES)
    assert fit.data == carry / "glue" and fit.tokenizer == str(carry / "tokenizer")


def test_a_package_older_than_the_carried_ones_require_is_replaced(capsys):
    requirements = gpu_session.carried_requirements(("pyarrow",))
    assert requirements["pyarrow"].startswith(">=")  # what this datasets asks of pyarrow
    assert gpu_session.too_old(requirements) == []  # this machine's pyarrow meets it
    needed = {"pyarrow": ">=999", "no-such-package": ">=1"}
    assert gpu_session.too_old(needed) == ["pyarrow", "no-such-package"]
    printed = capsys.readouterr().out
    assert "pyarrow " in printed and ">=999 required" in printed and "no-such-package absent here" in printed


def test_run_without_carried_wheels_says_what_to_run_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(gpu_session, "CARRY", tmp_path / "absent")
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    assert gpu_session.run(gpu_session.parse_arguments(["run"])) == 2
    assert "python -m bench.gpu_session prepare" in capsys.readouterr().out


@pytest.mark.slow  # runs subprocesses
def test_a_step_keeps_its_output_and_stops_at_its_time_limit(tmp_path, capsys):
    printing = [sys.executable, "-c", "print('measured'); import warnings; print('UserWarning: noise')"]
    assert gpu_session.step("quick", printing, 30, tmp_path) == 0
    assert (tmp_path / "quick.log").read_text() == "measured\nUserWarning: noise\n"
    # The command first, then its output less the warnings, which stay in the log only.
    assert capsys.readouterr().out.endswith("(at most 30 s)\nmeasured\n")
    sleeping = [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"]
    assert gpu_session.step("overrun", sleeping, 1, tmp_path) == 124
    assert (tmp_path / "overrun.log").read_text() == "started\n"
