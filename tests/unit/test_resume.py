"""`neobert_tasks.resume` and `neobert_tasks.metric_history` on their own: checkpoint reads and atomic writes,
storage checks, the run's newest ``last.ckpt``, the loop-state helpers, and `ResumeCheckpoint` inside a tiny
`Trainer` (step saves, the final state, SIGTERM, ``metrics.csv`` history cut at the checkpoint's step).

The end-to-end runs (real SIGKILL and SIGTERM through the command line) are in tests/cli/test_resume.py.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import stat
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import lightning as L
import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from neobert_tasks.callbacks import BestModelCheckpoint
from neobert_tasks.errors import MissingPathError, StorageError
from neobert_tasks.metric_history import read_rows, restore_rows
from neobert_tasks.resume import (
    AtomicCheckpointIO,
    CheckpointError,
    ResumeCheckpoint,
    check_free_space,
    epoch_end_state,
    latest_run_checkpoint,
    load_checkpoint_file,
    mark_validation_unfinished,
    remove_unfinished_writes,
    use_atomic_checkpoints,
)
from tests.unit.tiny_training import (
    BATCHES_PER_EPOCH,
    TinyRegression,
    checkpoints,
    run_folder,
    tiny_trainer,
)

# The state of a trainer inside `fit`, for the stand-in trainers below.
FITTING = SimpleNamespace(fn="fit")

pytestmark = [
    # Expected in these runs: a resumed run's folders exist, a run without validation has no val/loss, and
    # the tiny module's loader is not resumable (its training rows follow the step instead).
    pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty"),
    pytest.mark.filterwarnings("ignore:.*could not find the monitored key"),
    pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended"),
]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# --- reading a checkpoint -------------------------------------------------------------------------------


def test_a_checkpoint_of_tensors_and_plain_values_loads(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "global_step": 7}, path)
    loaded = load_checkpoint_file(path)
    assert loaded["global_step"] == 7
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))


def test_a_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(MissingPathError, match=rf"^Checkpoint '{tmp_path / 'none.ckpt'}' does not exist\.$"):
        load_checkpoint_file(tmp_path / "none.ckpt")


def test_a_truncated_checkpoint_is_named_with_its_size(tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(
        CheckpointError, match=rf"^Checkpoint '{truncated}' is corrupt or truncated \(2000 bytes; "
    ):
        load_checkpoint_file(truncated)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.ckpt", b"hello, not a checkpoint\n"),
        ("model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}"),
    ],
)
def test_a_file_torch_save_did_not_write_is_named_as_such(tmp_path, name, content):
    """A text file made torch's unpickler raise a bare ``KeyError: 101``."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as refusal:
        load_checkpoint_file(path)
    assert str(refusal.value) == (
        f"Checkpoint '{path}' is not a checkpoint: torch.save writes zip archives and this"
        f" {len(content)}-byte file is not one; give the .ckpt file of a run (or --ckpt_path best or last)."
    )


def test_a_directory_given_as_checkpoint_is_not_called_missing(tmp_path):
    with pytest.raises(
        CheckpointError, match=rf"^Checkpoint '{tmp_path}' is a directory; give a \.ckpt file"
    ):
        load_checkpoint_file(tmp_path)


def test_an_empty_checkpoint_is_a_truncated_one(tmp_path):
    path = tmp_path / "empty.ckpt"
    path.touch()
    with pytest.raises(CheckpointError, match=rf"^Checkpoint '{path}' is corrupt or truncated \(0 bytes; "):
        load_checkpoint_file(path)


def test_a_checkpoint_in_torchs_legacy_format_still_loads(tmp_path):
    path = tmp_path / "legacy.ckpt"
    torch.save({"global_step": 3}, path, _use_new_zipfile_serialization=False)
    assert load_checkpoint_file(path)["global_step"] == 3


class _CreatesAFile:
    """Unpickling this creates ``path``: what a malicious checkpoint does with a real payload."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "malicious.ckpt"
    torch.save({"payload": _CreatesAFile(marker)}, path)
    with pytest.raises(CheckpointError, match="holds Python objects other than tensors and plain values"):
        load_checkpoint_file(path)
    with pytest.raises(CheckpointError):  # the CheckpointIO that Lightning loads through refuses it too
        AtomicCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not marker.exists()


# --- writing a checkpoint -------------------------------------------------------------------------------


def test_an_atomic_write_leaves_the_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "new_folder" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.ones(2)}, path)
    assert load(path)["global_step"] == 3
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]


def test_an_atomic_write_gives_the_checkpoint_the_permissions_of_any_other_file(tmp_path):
    # mkstemp's file is 0600 whatever the umask: others could not read the checkpoint.
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, tmp_path / "last.ckpt")
    (tmp_path / "plain.txt").write_text("x")
    plain = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert stat.S_IMODE((tmp_path / "last.ckpt").stat().st_mode) == plain and plain & 0o044


def test_storage_options_are_refused():
    with pytest.raises(TypeError, match="AtomicCheckpointIO takes no storage_options"):
        AtomicCheckpointIO().save_checkpoint({}, "unused.ckpt", storage_options={"compress": True})


def failing_save(error: BaseException):
    """A ``torch.save`` that writes some bytes and then fails with ``error``, as a full disk does."""

    def save(checkpoint, file):
        file.write(b"partial")
        raise error

    return mock.patch("neobert_tasks.resume.torch.save", save)


def test_a_failed_write_keeps_the_previous_checkpoint_and_says_so(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3}, path)
    with failing_save(OSError(errno.ENOSPC, "No space left on device")), pytest.raises(StorageError) as error:
        AtomicCheckpointIO().save_checkpoint({"global_step": 6}, path)
    assert str(error.value) == (
        f"Could not write checkpoint '{path}' (no space left on device [ENOSPC]), last.ckpt there intact:"
        " free space or fix the folder, then resume with `fit --ckpt_path last`."
    )
    assert load(path)["global_step"] == 3
    # A new best checkpoint has a new name: the message said "no earlier one exists" beside last.ckpt.
    best = tmp_path / "epoch=1-step=16.ckpt"
    with failing_save(OSError(errno.ENOSPC, "No space left on device")), pytest.raises(StorageError) as error:
        AtomicCheckpointIO().save_checkpoint({"global_step": 16}, best)
    assert f"'{best}' (no space left on device [ENOSPC]), last.ckpt there intact:" in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temporary file is gone


def test_a_failed_first_write_says_that_no_checkpoint_exists(tmp_path):
    # torch.save reports a failed write as a RuntimeError raised while handling the OSError that says why.
    def runtime_error_during_os_error():
        try:
            raise OSError(errno.EFBIG, "File too large")
        except OSError:
            raise RuntimeError("unexpected pos 64 vs 0")  # noqa: B904 (the context is what torch gives)

    try:
        runtime_error_during_os_error()
    except RuntimeError as raised:
        error = raised
    expected = r"\(file too large \[EFBIG\]\), no checkpoint was written there yet:"
    with failing_save(error), pytest.raises(StorageError, match=expected):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_for_another_reason_keeps_its_own_error(tmp_path):
    with failing_save(ValueError("not a storage fault")), pytest.raises(ValueError, match="not a storage"):
        AtomicCheckpointIO().save_checkpoint({}, tmp_path / "last.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_the_trainer_gets_atomic_checkpoints_unless_another_checkpoint_io_was_configured():
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=TorchCheckpointIO()))
    use_atomic_checkpoints(trainer)
    assert type(trainer.strategy.checkpoint_io) is AtomicCheckpointIO

    class OwnCheckpointIO(TorchCheckpointIO):
        pass

    own = OwnCheckpointIO()
    trainer = SimpleNamespace(strategy=SimpleNamespace(checkpoint_io=own))
    use_atomic_checkpoints(trainer)
    assert trainer.strategy.checkpoint_io is own


def test_unfinished_writes_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".last.ckpt.a1b2.tmp").write_bytes(b"\0" * 100)
    (tmp_path / ".epoch=0-step=8.ckpt.c3d4.tmp").write_bytes(b"\0" * 100)
    kept = ["last.ckpt", "epoch=0-step=8.ckpt", "notes.tmp", ".hidden"]
    for name in kept:
        (tmp_path / name).write_text("")
    remove_unfinished_writes(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


# --- free space -----------------------------------------------------------------------------------------


def free_space(free: int):
    usage = SimpleNamespace(total=10**12, used=10**12 - free, free=free)
    return mock.patch("neobert_tasks.resume.shutil.disk_usage", return_value=usage)


def test_free_space_must_hold_the_weights_and_two_moments_of_every_trainable_weight(tmp_path):
    module = torch.nn.Sequential(torch.nn.Linear(100, 100), torch.nn.Linear(100, 100))  # 2 × 10,100 floats
    module[1].requires_grad_(False)
    needed = 2 * 10_100 * 4 + 2 * 10_100 * 4  # all weights, and Adam's two moments of the first layer only
    with free_space(needed):
        check_free_space(tmp_path, module)
    with free_space(needed - 1), pytest.raises(StorageError) as error:
        check_free_space(tmp_path, module)
    assert str(error.value).startswith(f"'{tmp_path}' has 0 MiB free, less than one checkpoint of this model")
    assert str(error.value).endswith("free space or set trainer.default_root_dir elsewhere.")


def test_free_space_is_measured_on_the_nearest_existing_folder(tmp_path):
    module = torch.nn.Linear(10, 10)
    with free_space(0) as disk_usage, pytest.raises(StorageError, match=rf"^'{tmp_path}' has 0 MiB free"):
        check_free_space(tmp_path / "runs" / "version_0" / "checkpoints", module)
    disk_usage.assert_called_once_with(tmp_path)


# --- the newest last.ckpt of a run root -----------------------------------------------------------------


def test_the_newest_last_checkpoint_of_the_run_folders_is_found(tmp_path):
    assert latest_run_checkpoint(tmp_path) is None
    assert latest_run_checkpoint(tmp_path / "absent") is None
    for version, mtime in ((0, 100), (3, 300), (12, 200)):
        folder = tmp_path / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_text("")
        os.utime(folder / "last.ckpt", (mtime, mtime))
    # Not a run folder, and not a last checkpoint: neither counts, however new.
    (tmp_path / "version_x" / "checkpoints").mkdir(parents=True)
    (tmp_path / "version_x" / "checkpoints" / "last.ckpt").write_text("")
    (tmp_path / "version_0" / "checkpoints" / "epoch=0-step=8.ckpt").write_text("")
    assert latest_run_checkpoint(tmp_path) == (tmp_path / "version_3" / "checkpoints" / "last.ckpt", 3)

    # A last-v1.ckpt (an older run's version counter) is a last checkpoint too.
    newest = tmp_path / "version_12" / "checkpoints" / "last-v1.ckpt"
    newest.write_text("")
    os.utime(newest, (400, 400))
    assert latest_run_checkpoint(tmp_path) == (newest, 12)


# --- loop state ----------------------------------------------------------------------------------------


def fake_fit_state(started: int, processed: int, completed: int, batches_done: int) -> SimpleNamespace:
    """A trainer whose fit ended with these epoch counts, ``batches_done`` batches into an epoch of 6."""
    progress = SimpleNamespace(
        total=SimpleNamespace(started=started, processed=processed, completed=completed),
        current=SimpleNamespace(started=started, processed=processed, completed=completed),
    )
    batches = SimpleNamespace(current=SimpleNamespace(completed=batches_done))
    epoch_loop = SimpleNamespace(batch_progress=batches)
    fit_loop = SimpleNamespace(epoch_progress=progress, epoch_loop=epoch_loop)
    return SimpleNamespace(fit_loop=fit_loop, num_training_batches=6)


def epoch_counts(trainer: SimpleNamespace) -> list[tuple[int, int]]:
    """(processed, completed) of the total and the current epoch counts."""
    progress = trainer.fit_loop.epoch_progress
    return [(counts.processed, counts.completed) for counts in (progress.total, progress.current)]


@pytest.mark.parametrize(
    ("ended", "saved"),
    [
        ((2, 2, 2, 6), (2, 1)),  # two epochs to their end: the second trained, not yet counted complete
        ((3, 4, 3, 6), (3, 2)),  # the same after a resume, whose restart counted an epoch processed twice
        ((1, 1, 1, 4), (0, 0)),  # max_steps at batch 4 of epoch 0: as at any of its steps
        ((2, 3, 2, 3), (1, 1)),  # the same inside epoch 1 after a resume inside epoch 0
    ],
)
def test_epoch_end_state_reads_the_ended_fit_as_lightning_saves_the_last_epoch(ended, saved):
    trainer = fake_fit_state(*ended)
    with epoch_end_state(trainer):
        assert epoch_counts(trainer) == [saved, saved]
    assert epoch_counts(trainer) == [ended[1:3]] * 2

    with pytest.raises(RuntimeError), epoch_end_state(trainer):  # restored even when the save fails
        raise RuntimeError
    assert epoch_counts(trainer) == [ended[1:3]] * 2


def test_epoch_end_state_leaves_a_fit_that_started_no_epoch_alone():
    trainer = fake_fit_state(0, 0, 0, 0)
    with epoch_end_state(trainer):
        assert epoch_counts(trainer) == [(0, 0), (0, 0)]


def test_an_interrupted_validation_is_marked_as_started_with_no_batch_processed():
    # The epoch's third validation, interrupted in its third batch: 7 batches of it and earlier ones done.
    progress = SimpleNamespace(
        total=SimpleNamespace(ready=8, started=8, processed=7, completed=7),
        current=SimpleNamespace(ready=3, started=3, processed=2, completed=2),
    )
    val_loop = SimpleNamespace(batch_progress=progress)
    trainer = SimpleNamespace(fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(val_loop=val_loop)))
    mark_validation_unfinished(trainer)
    assert vars(progress.total) == {"ready": 6, "started": 6, "processed": 5, "completed": 5}
    assert vars(progress.current) == {"ready": 1, "started": 1, "processed": 0, "completed": 0}


# --- ResumeCheckpoint inside a tiny Trainer ---------------------------------------------------------------


class RecordSaves(L.Callback):
    """Records the global step of every checkpoint written, and how many validations had ended by then."""

    def __init__(self):
        self.steps: list[int] = []
        self.validations_before: list[int] = []
        self.validations = 0

    def on_validation_end(self, trainer, pl_module):
        self.validations += 1

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        self.steps.append(checkpoint["global_step"])
        self.validations_before.append(self.validations)


def resume_callbacks(**resume) -> tuple[BestModelCheckpoint, ResumeCheckpoint]:
    return BestModelCheckpoint(monitor="val/loss"), ResumeCheckpoint(**resume)


def test_a_negative_step_interval_saves_only_on_sigterm_and_validation():
    assert ResumeCheckpoint(every_n_train_steps=-5)._every_n_train_steps == 0


def test_last_checkpoint_holds_the_final_state_which_resumes_into_a_next_epoch(tmp_path):
    saves = RecordSaves()
    trainer = tiny_trainer(tmp_path, [saves, ResumeCheckpoint(every_n_train_steps=3)], limit_val_batches=0)
    trainer.fit(TinyRegression())
    # Step saves after steps 3 and 6; step 8, the end of the epoch, is not one, yet last.ckpt holds it.
    assert saves.steps == [3, 6, BATCHES_PER_EPOCH]
    assert sorted(p.name for p in checkpoints(tmp_path).iterdir()) == ["last.ckpt"]
    assert load(checkpoints(tmp_path) / "last.ckpt")["global_step"] == BATCHES_PER_EPOCH

    # With more epochs, that state trains on (it is not "finished, nothing left to train").
    more = tiny_trainer(
        tmp_path, [ResumeCheckpoint(every_n_train_steps=3)], max_epochs=2, limit_val_batches=0
    )
    more.fit(TinyRegression(), ckpt_path=checkpoints(tmp_path) / "last.ckpt")
    assert more.global_step == 2 * BATCHES_PER_EPOCH


def test_last_checkpoint_goes_beside_the_best_ones(tmp_path):
    best = BestModelCheckpoint(monitor="val/loss", dirpath=tmp_path / "best_and_last")
    resume = ResumeCheckpoint(every_n_train_steps=3)
    tiny_trainer(tmp_path, [best, resume]).fit(TinyRegression())
    assert resume.dirpath == best.dirpath == str(tmp_path / "best_and_last")
    assert sorted(p.name for p in (tmp_path / "best_and_last").iterdir()) == [
        "epoch=0-step=8.ckpt",
        "last.ckpt",
    ]


def test_the_step_save_right_before_a_validation_is_left_to_the_best_model_checkpoint(tmp_path):
    """A last.ckpt saved before a validation would resume past it (Lightning counts it done)."""
    saves = RecordSaves()
    best, resume = resume_callbacks(every_n_train_steps=4)
    trainer = tiny_trainer(tmp_path, [saves, best, resume], val_check_interval=4)
    trainer.fit(TinyRegression())
    # Validations after steps 4 and 8, each followed by the best checkpoint and last.ckpt (two saves), and
    # the final state once more at the end; ResumeCheckpoint's own saves at steps 4 and 8 are skipped.
    assert saves.steps == [4, 4, 8, 8, 8]
    assert saves.validations_before == [1, 1, 2, 2, 2]


def test_setup_removes_unfinished_writes_and_checks_free_space(tmp_path):
    folder = checkpoints(tmp_path)
    folder.mkdir(parents=True)
    (folder / ".last.ckpt.dead.tmp").write_bytes(b"\0" * 10)
    trainer = tiny_trainer(tmp_path, [*resume_callbacks(every_n_train_steps=0)], max_steps=1)
    trainer.fit(TinyRegression())
    assert not list(folder.glob("*.tmp"))

    with free_space(10), pytest.raises(StorageError, match="less than one checkpoint of this model needs"):
        tiny_trainer(tmp_path / "full", [*resume_callbacks()], max_steps=1).fit(TinyRegression())
    assert not list((tmp_path / "full").rglob("*.ckpt"))


def test_state_dict_records_the_step_and_flushes_pending_csv_rows(tmp_path):
    resume = ResumeCheckpoint()
    assert resume.state_dict() == {"dirpath": None}  # before setup: no trainer to ask
    trainer = csv_trainer(tmp_path)
    trainer.global_step = 42
    trainer.loggers[0].log_metrics({"train/loss": 0.5}, step=41)
    path = tmp_path / "version_0" / "metrics.csv"
    assert not path.exists()  # the row waits in memory until the logger's next flush
    resume._trainer, resume.dirpath = trainer, str(tmp_path)
    assert resume.state_dict() == {"dirpath": str(tmp_path), "global_step": 42}
    assert path.read_text().splitlines()[-1] == "41,0.5"
    resume.load_state_dict({"dirpath": "elsewhere", "global_step": 42})
    assert resume._checkpoint_step == 42


class Crash(L.Callback):
    """Ends ``fit`` with an error as step ``step`` starts, after rows were logged past the last save."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("crash")


def metric_rows(root: Path) -> list[dict[str, str]]:
    """The rows of the run's ``metrics.csv``, as read by `csv.DictReader`."""
    with (run_folder(root) / "metrics.csv").open(newline="") as file:
        return list(csv.DictReader(file))


def test_a_resumed_run_keeps_the_rows_before_its_checkpoint_and_logs_the_rest_once(tmp_path):
    reference = tmp_path / "reference"
    tiny_trainer(reference, [*resume_callbacks(every_n_train_steps=3)], max_epochs=2).fit(TinyRegression())

    root = tmp_path / "resumed"
    trainer = tiny_trainer(root, [*resume_callbacks(every_n_train_steps=3), Crash(step=11)], max_epochs=2)
    with pytest.raises(RuntimeError, match="crash"):
        trainer.fit(TinyRegression())
    # The failed run's logger wrote rows up to step 10; its last step save is that of step 9.
    assert max(int(row["step"]) for row in metric_rows(root)) == 10
    assert load(checkpoints(root) / "last.ckpt")["global_step"] == 9

    resume = ResumeCheckpoint(every_n_train_steps=3)
    trainer = tiny_trainer(root, [BestModelCheckpoint(monitor="val/loss"), resume], max_epochs=2)
    resume.remember_metric_history(trainer)  # as the command line does, before fit deletes the file
    trainer.fit(TinyRegression(), ckpt_path=checkpoints(root) / "last.ckpt")

    resumed, expected = metric_rows(root), metric_rows(reference)
    assert [row["step"] for row in resumed] == [row["step"] for row in expected]  # each step's rows once
    for row, expected_row in zip(resumed, expected, strict=True):
        assert numbers(row) == pytest.approx(numbers(expected_row), abs=1e-6), row["step"]


def numbers(row: dict[str, str]) -> dict[str, float | None]:
    return {name: float(value) if value else None for name, value in row.items()}


def csv_trainer(tmp_path: Path) -> SimpleNamespace:
    """What `read_rows` and `restore_rows` need of a trainer: rank zero and one CSV logger."""
    return SimpleNamespace(is_global_zero=True, loggers=[CSVLogger(tmp_path, name="", version=0)])


def test_restore_rows_writes_back_the_rows_before_the_step_and_appends_under_the_same_header(tmp_path):
    trainer = csv_trainer(tmp_path)
    path = tmp_path / "version_0" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("epoch,step,train/loss,val/loss\n0,0,1.0,\n0,1,0.9,\n0,1,,0.8\n0,2,0.7,\n,,,\n0,3,0.6,\n")
    history = read_rows(trainer)
    assert history == {str(path): list(csv.reader(path.read_text().splitlines()))}

    restore_rows(trainer, history, before_step=2)
    assert path.read_text().splitlines() == [
        "epoch,step,train/loss,val/loss", "0,0,1.0,", "0,1,0.9,", "0,1,,0.8", ",,,",
    ]  # fmt: skip
    logger = trainer.loggers[0]
    logger.log_metrics({"train/loss": 0.5}, step=2)
    logger.save()
    assert path.read_text().splitlines()[-1].split(",") == ["", "2", "0.5", ""]
    assert path.read_text().splitlines()[0] == "epoch,step,train/loss,val/loss"


def test_restore_rows_without_a_recorded_step_keeps_every_row(tmp_path):
    trainer = csv_trainer(tmp_path)
    path = tmp_path / "version_0" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("epoch,step,train/loss\n0,0,1.0\n0,5,0.5\n")
    history = read_rows(trainer)
    restore_rows(trainer, history, before_step=None)
    assert path.read_text().splitlines() == ["epoch,step,train/loss", "0,0,1.0", "0,5,0.5"]


def test_other_ranks_neither_read_nor_write_the_history(tmp_path):
    trainer = csv_trainer(tmp_path)
    trainer.is_global_zero = False
    path = tmp_path / "version_0" / "metrics.csv"
    path.parent.mkdir()
    path.write_text("epoch,step\n0,5\n")
    assert read_rows(trainer) == {}
    restore_rows(trainer, {str(path): [["epoch", "step"]]}, before_step=0)
    assert path.read_text() == "epoch,step\n0,5\n"


class SigtermAt(L.Callback):
    """Sends this process SIGTERM as step ``step`` starts, once Lightning's handler is in place."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            # Without Lightning's handler the signal would end the test process: fail instead.
            assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_last_checkpoint_after_the_batch_it_arrived_in(tmp_path):
    best, resume = resume_callbacks(every_n_train_steps=0)
    trainer = tiny_trainer(tmp_path, [best, resume, SigtermAt(step=5)], limit_val_batches=0)
    with pytest.raises(SIGTERMException):
        trainer.fit(TinyRegression())
    assert load(checkpoints(tmp_path) / "last.ckpt")["global_step"] == 6


@mock.patch("neobert_tasks.resume.record_sigterm_stop")  # for the closing line; needs a real run folder
def test_sigterm_is_not_saved_when_turned_off_or_during_the_sanity_check(record, tmp_path):
    trainer = SimpleNamespace(
        sanity_checking=False, validating=False, save_checkpoint=mock.Mock(), state=FITTING, global_step=3
    )
    ResumeCheckpoint(save_on_sigterm=False).on_exception(trainer, None, SIGTERMException())
    resume = ResumeCheckpoint()
    resume.dirpath = str(tmp_path)
    resume.on_exception(trainer, None, RuntimeError("not a signal"))
    trainer.sanity_checking = True
    resume.on_exception(trainer, None, SIGTERMException())
    trainer.save_checkpoint.assert_not_called()

    trainer.sanity_checking = False
    resume.on_exception(trainer, None, SIGTERMException())
    trainer.save_checkpoint.assert_called_once_with(str(tmp_path / "last.ckpt"), weights_only=False)
    record.assert_called_once_with(trainer, str(tmp_path / "last.ckpt"))


@mock.patch("neobert_tasks.resume.record_sigterm_stop")
def test_sigterm_in_a_validation_marks_it_to_run_again_before_saving(record, tmp_path):
    trainer = SimpleNamespace(sanity_checking=False, validating=True, state=FITTING, global_step=3)
    progress = SimpleNamespace(
        total=SimpleNamespace(ready=3, started=3, processed=2, completed=2),
        current=SimpleNamespace(ready=3, started=3, processed=2, completed=2),
    )
    trainer.fit_loop = SimpleNamespace(
        epoch_loop=SimpleNamespace(val_loop=SimpleNamespace(batch_progress=progress))
    )
    saved = []
    trainer.save_checkpoint = lambda path, weights_only: saved.append(vars(progress.current).copy())
    resume = ResumeCheckpoint()
    resume.dirpath = str(tmp_path)
    resume.on_exception(trainer, None, SIGTERMException())
    assert saved == [{"ready": 1, "started": 1, "processed": 0, "completed": 0}]


def test_the_step_checkpoint_state_is_found_under_its_old_key_too():
    """Checkpoints written before ResumeCheckpoint had a key of its own hold its state under
    ModelCheckpoint's, which names every_n_train_steps."""
    callback = ResumeCheckpoint(every_n_train_steps=2)
    assert callback.state_key == "ResumeCheckpoint" == ResumeCheckpoint(every_n_train_steps=7).state_key
    old_key = "ResumeCheckpoint{'monitor': None, 'mode': 'min', 'every_n_train_steps': 500}"
    validating = SimpleNamespace(state=SimpleNamespace(fn="validate"))
    callback.on_load_checkpoint(
        validating, None, {"callbacks": {old_key: {"dirpath": "x", "global_step": 8}}}
    )
    assert callback._checkpoint_step == 8
    # A checkpoint with the new key is Lightning's to restore (through load_state_dict).
    fresh = ResumeCheckpoint()
    fresh.on_load_checkpoint(
        validating, None, {"callbacks": {"ResumeCheckpoint": {"global_step": 3}, old_key: {}}}
    )
    assert fresh._checkpoint_step is None
