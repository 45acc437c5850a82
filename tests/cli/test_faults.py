"""Faults that must neither lose work nor mislead: storage that refuses a write, a missing ``last``
checkpoint outside ``fit``, stale or doubled ``last`` checkpoints, a NaN score taken for the best, and a
precision that Lightning substituted.

Runs are in-process quickstart runs (tiny model, debug preset: one epoch of 8 batches, validation at its
end), a few seconds each.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import torch
import yaml

from neobert_tasks.callbacks import BestModelCheckpoint
from neobert_tasks.cli import EX_IOERR
from neobert_tasks.tasks.base import NeoBERTTask
from tests.cli.helpers import command_error, quickstart_args, run_cli

pytestmark = pytest.mark.slow  # runs the command line end to end


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def storage_error(capsys, *args: str, tmp_path: Path) -> str:
    """Run the command line expecting a storage fault: exit status 74 and one line naming the path."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args, tmp_path=tmp_path)
    assert exit_info.value.code == EX_IOERR
    error = capsys.readouterr().err
    assert "Traceback" not in error
    message = error.strip().splitlines()[-1]
    assert message.startswith("neobert_tasks: error: ")
    return message.removeprefix("neobert_tasks: error: ")


def test_one_last_checkpoint_holds_the_final_state_and_a_finished_fit_continues(tmp_path):
    """Without validation, the last step save is at step 6 of 8: last.ckpt must still hold step 8 and be the
    only last*.ckpt. Resumed with a second epoch, the run trains on and metrics.csv keeps the first."""
    args = [
        *quickstart_args(tmp_path),
        "--resume_checkpoint.every_n_train_steps", "3",
        "--trainer.limit_val_batches", "0",
    ]  # fmt: skip
    run_dir = run_cli("fit", *args, tmp_path=tmp_path)
    checkpoints = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
    assert checkpoints == ["last.ckpt"]  # no validation ran, so no best checkpoint either
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 8
    first_epoch = (run_dir / "metrics.csv").read_text().splitlines()

    run_cli("fit", *args, "--trainer.max_epochs", "2", "--ckpt_path", "last", tmp_path=tmp_path)
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 16
    both_epochs = (run_dir / "metrics.csv").read_text().splitlines()
    assert both_epochs[: len(first_epoch)] == first_epoch
    assert [row.split(",")[:2] for row in both_epochs[len(first_epoch) :]] == [
        ["1", str(step)] for step in range(8, 16)
    ]


def test_a_finished_fit_resumed_again_changes_nothing(tmp_path):
    args = quickstart_args(tmp_path)
    run_dir = run_cli("fit", *args, tmp_path=tmp_path)
    before = {name: (run_dir / name).read_text() for name in ("metrics.csv", "metrics.json")}
    run_cli("fit", *args, "--ckpt_path", "last", tmp_path=tmp_path)
    assert {name: (run_dir / name).read_text() for name in before} == before
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == [
        "epoch=0-step=8.ckpt",
        "last.ckpt",
    ]


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_last_checkpoint_outside_fit_must_exist(capsys, tmp_path, subcommand):
    message = command_error(
        capsys, subcommand, *quickstart_args(tmp_path), "--ckpt_path", "last", tmp_path=tmp_path
    )
    root = tmp_path / "runs"
    assert message == (
        f"--ckpt_path last: no last.ckpt under '{root}/version_*/checkpoints' to {subcommand}; run fit first"
        " or give the path of a checkpoint."
    )


def test_a_nan_score_is_never_the_best():
    checkpoint = BestModelCheckpoint(monitor="val/pearson", mode="max")
    trainer = SimpleNamespace(global_step=3)
    with pytest.warns(UserWarning, match=r"val/pearson is nan at step 3: not kept as a best checkpoint"):
        assert not checkpoint.check_monitor_top_k(trainer, torch.tensor(float("nan")))
    assert not checkpoint.check_monitor_top_k(trainer, torch.tensor(float("-inf")))


def test_the_saved_config_records_the_precision_that_ran(tmp_path):
    with pytest.warns(UserWarning, match="trainer.precision 16-mixed runs as bf16-mixed"):
        run_dir = run_cli(
            "fit", *quickstart_args(tmp_path), "--trainer.precision", "16-mixed", "--trainer.max_steps", "1",
            tmp_path=tmp_path,
        )  # fmt: skip
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["precision"] == "bf16-mixed"


@contextlib.contextmanager
def read_only_folder(tmp_path: Path):
    """A folder this process cannot write: by its mode, or as root (which ignores modes) a read-only tmpfs."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
        yield folder, "permission denied [EACCES]"
        folder.chmod(0o700)
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield folder, "read-only file system [EROFS]"
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_run_folder_that_cannot_be_written_is_named(capsys, tmp_path):
    with read_only_folder(tmp_path) as (folder, cause):
        args = [*quickstart_args(tmp_path), "--trainer.default_root_dir", str(folder / "runs")]
        message = storage_error(capsys, "fit", *args, tmp_path=tmp_path)
    assert message == (
        f"Cannot write the run folder '{folder / 'runs' / 'version_0'}' ({cause}): set"
        " trainer.default_root_dir to a folder you can write."
    )


def test_a_run_folder_below_a_file_is_named(capsys, tmp_path):
    (tmp_path / "a_file").write_text("")
    args = [*quickstart_args(tmp_path), "--trainer.default_root_dir", str(tmp_path / "a_file" / "runs")]
    message = storage_error(capsys, "fit", *args, tmp_path=tmp_path)
    assert message.startswith(
        f"Cannot write the run folder '{tmp_path / 'a_file' / 'runs' / 'version_0'}' (not a"
    )


def test_a_new_run_folder_taken_by_a_fit_started_at_the_same_moment_is_refused(capsys, tmp_path, monkeypatch):
    """Two fits into one root both picked version_0 and wrote over each other's checkpoints and metrics."""
    import neobert_tasks.cli as cli  # noqa: PLC0415

    picked = cli.next_version

    def taken_meanwhile(root):
        version = picked(root)
        (Path(root) / f"version_{version}").mkdir(parents=True)  # the other fit, between pick and start
        return version

    monkeypatch.setattr(cli, "next_version", taken_meanwhile)
    message = storage_error(capsys, "fit", *quickstart_args(tmp_path), tmp_path=tmp_path)
    assert message.startswith(
        f"Run folder '{tmp_path / 'runs' / 'version_0'}' was created by another command"
    )
    assert list((tmp_path / "runs" / "version_0").iterdir()) == []  # the other fit's folder, left alone


def test_too_little_free_space_for_a_checkpoint_stops_before_training(capsys, tmp_path):
    with mock.patch(
        "neobert_tasks.resume.shutil.disk_usage",
        return_value=SimpleNamespace(total=10**9, used=10**9 - 2**20, free=2**20),
    ):
        message = storage_error(capsys, "fit", *quickstart_args(tmp_path), tmp_path=tmp_path)
    assert message.startswith(f"'{tmp_path / 'runs' / 'version_0' / 'checkpoints'}'") or message.startswith(
        f"'{tmp_path / 'runs'}"
    )
    assert "has 1 MiB free, less than one checkpoint of this model needs (about" in message
    assert not list(tmp_path.rglob("*.ckpt"))


@contextlib.contextmanager
def file_size_limit_from_step(step: int, limit_bytes: int):
    """From optimizer step ``step`` on, no file this process writes may exceed ``limit_bytes``
    (``RLIMIT_FSIZE``): the next checkpoint write then fails as on a full disk, with EFBIG for ENOSPC."""
    previous_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Without this, the kernel ends the process with SIGXFSZ instead of failing the write.
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    start_batch = NeoBERTTask.on_train_batch_start

    def limited(task, batch, batch_idx):
        if task.trainer.global_step == step:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, previous_limit[1]))
        return start_batch(task, batch, batch_idx)

    try:
        with mock.patch.object(NeoBERTTask, "on_train_batch_start", limited):
            yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous_limit)
        signal.signal(signal.SIGXFSZ, previous_handler)


def test_a_failed_checkpoint_write_keeps_the_previous_one_and_the_run_resumes(capsys, tmp_path):
    args = [*quickstart_args(tmp_path), "--resume_checkpoint.every_n_train_steps", "3"]
    checkpoints = tmp_path / "runs" / "version_0" / "checkpoints"
    with file_size_limit_from_step(4, 200_000):  # after the save at step 3, before the one at step 6
        message = storage_error(capsys, "fit", *args, tmp_path=tmp_path)
    assert message == (
        f"Could not write checkpoint '{checkpoints / 'last.ckpt'}' (file too large [EFBIG]), last.ckpt there"
        " intact: free space or fix the folder, then resume with `fit --ckpt_path last`."
    )
    assert load(checkpoints / "last.ckpt")["global_step"] == 3
    assert not list(checkpoints.glob(".*.tmp"))

    # A write killed mid-way (SIGKILL, power loss) leaves its temporary file; the next start removes it.
    (checkpoints / ".last.ckpt.killed.tmp").write_bytes(b"\0" * 1000)
    run_cli("fit", *args, "--ckpt_path", "last", tmp_path=tmp_path)
    assert not list(checkpoints.glob(".*.tmp"))
    assert load(checkpoints / "last.ckpt")["global_step"] == 8


def test_ctrl_c_while_the_command_starts_exits_130_in_one_line(capsys, tmp_path):
    """Ctrl-C while the model loads (before any step): no traceback, the shell's status for SIGINT."""
    capsys.readouterr()
    with (
        mock.patch("neobert_tasks.cli.NeoBERTCLI.instantiate_classes", side_effect=KeyboardInterrupt),
        pytest.raises(SystemExit) as exit_info,
    ):
        run_cli("fit", *quickstart_args(tmp_path), tmp_path=tmp_path)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == "neobert_tasks: interrupted."
