"""What the suite does when runs fail, stop or err, with a stand-in for the neobert_tasks command line
that writes a run's files instantly (or exits with a given status), so nothing is trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neobert_tasks.suite import runner
from tests.suite.helpers import run_suite


def fake_launcher(statuses: dict[str, int], calls: list[str]):
    """A launcher that, per task, exits with ``statuses[task]`` or writes a finished run (accuracy 0.5);
    it records each run it is asked for in ``calls``."""

    def launch(arguments: list[str]) -> int:
        task = arguments[arguments.index("--config") + 1].rsplit("/", 1)[-1].removesuffix(".yaml")
        logger = json.loads(arguments[arguments.index("--trainer.logger") + 1])[0]["init_args"]
        calls.append(f"{task} {logger['version']}")
        if task in statuses:
            return statuses[task]
        run_dir = Path(logger["save_dir"]) / logger["version"]
        (run_dir / "export").mkdir(parents=True)
        summary = {"monitor": "val/accuracy", "best_metrics": {"val/accuracy": 0.5}}
        (run_dir / "metrics.json").write_text(json.dumps(summary))
        return 0

    return launch


@pytest.fixture
def launched(monkeypatch):
    """Install the stand-in; returns (set statuses, list of runs started as "<task> seed_<n>")."""
    calls: list[str] = []
    statuses: dict[str, int] = {}
    monkeypatch.setattr(runner, "launch_in_process", fake_launcher(statuses, calls))
    return statuses, calls


def suite(tmp_path, *tasks: str) -> tuple[int, str]:
    argv = [
        "glue",
        "--tasks",
        *tasks,
        "--seeds",
        "0",
        "1",
        "--output_dir",
        tmp_path,
        "--launcher",
        "in_process",
    ]
    return run_suite(argv)


def test_a_failed_run_fails_alone_and_its_transfer_runs_do_not_start(tmp_path, launched):
    statuses, calls = launched
    statuses["mnli"] = 1
    status, output = suite(tmp_path, "cola", "rte")
    assert status == 1
    assert calls == ["mnli seed_0", "mnli seed_1", "cola seed_0", "cola seed_1"]
    assert "rte seed 1: not started, no finished MNLI run of seed 1 to start from" in output
    assert "2 runs trained, 0 skipped, 4 failed." in output
    assert "| CoLA | accuracy | 50.00 ± 0.00 | 2 |" in output


def test_transfer_runs_start_from_the_mnli_export_of_their_seed(tmp_path, launched):
    _, calls = launched
    status, output = suite(tmp_path, "rte")
    assert status == 0 and calls == ["mnli seed_0", "mnli seed_1", "rte seed_0", "rte seed_1"]
    assert (
        f"rte seed 1: training in {tmp_path}/rte/seed_1, starting from {tmp_path}/mnli/seed_1/export"
        in output
    )


@pytest.mark.parametrize("signal_status", [143, -15, 130])
def test_a_run_stopped_by_a_signal_stops_the_suite(tmp_path, launched, capsys, signal_status):
    statuses, calls = launched
    statuses["cola"] = signal_status
    status, _ = suite(tmp_path, "cola", "sst2")
    assert status == (143 if signal_status == -15 else signal_status)
    assert calls == ["cola seed_0"]
    assert "run the same command again to resume" in capsys.readouterr().err


def test_a_user_error_in_a_run_stops_the_suite_with_status_2(tmp_path, launched, capsys):
    statuses, calls = launched
    statuses["cola"] = 2
    status, _ = suite(tmp_path, "cola", "sst2")
    error = capsys.readouterr().err
    assert status == 2 and calls == ["cola seed_0"]
    assert error.startswith("neobert_tasks.suite: error: The cola seed 0 run stopped on a configuration")


def test_table_of_a_missing_folder_is_refused(tmp_path, capsys):
    status, _ = run_suite(["table", "--output_dir", tmp_path / "absent"])
    assert status == 2 and "does not exist" in capsys.readouterr().err


class StoppingRun:
    """Stands in for the run's process: Ctrl-C interrupts the suite's first wait; the run then needs
    ``finishes_in`` seconds to save last.ckpt and exit with status 130 (None: it never ends)."""

    def __init__(self, finishes_in: float | None):
        self.finishes_in, self.waits, self.killed, self.status = finishes_in, [], False, None

    def wait(self, timeout: float | None = None) -> int:
        self.waits.append(timeout)
        if len(self.waits) == 1:
            raise KeyboardInterrupt
        if self.finishes_in is None or timeout is not None and timeout < self.finishes_in:
            if self.killed:
                return -9
            raise runner.subprocess.TimeoutExpired("neobert_tasks", timeout)
        self.status = 130
        return self.status

    def poll(self) -> int | None:
        return self.status

    def kill(self) -> None:
        self.killed = True


@pytest.mark.parametrize(("finishes_in", "killed"), [(5.0, False), (None, True)])
def test_ctrl_c_gives_a_running_subprocess_time_to_save(monkeypatch, finishes_in, killed):
    """The run got the terminal's Ctrl-C too and saves last.ckpt after its step: the suite waits for it
    (up to CTRL_C_GRACE_SECONDS, then kills it) before it stops."""
    process = StoppingRun(finishes_in)
    monkeypatch.setattr(runner.subprocess, "Popen", lambda command: process)
    with pytest.raises(KeyboardInterrupt):
        runner.launch_subprocess(["fit"])
    assert process.waits[:2] == [None, runner.CTRL_C_GRACE_SECONDS]
    assert process.killed is killed
