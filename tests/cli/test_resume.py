"""Runs killed in the middle of an epoch resume where they stopped and end exactly as uninterrupted runs.

Each run is a ``fit`` on real SST-2 with the tiny model: two epochs of six batches, ``last.ckpt`` every
two steps, validation after each epoch. The interrupted run gets a real signal from
`tests.cli.interrupt.SignalAtStep` at step 9 (in the second epoch, one step after the last step
checkpoint), then ``fit --ckpt_path last`` finishes it in the same run folder. The final weights, the
optimizer state and the best validation scores must equal the uninterrupted run's to 1e-6.

Every run is ``main`` (what ``python -m neobert_tasks`` calls) on one thread. A run that gets SIGKILL runs in
a child process forked from this one, which the signal ends as it would end any process, without the
seconds of importing torch and transformers again that a new interpreter would take. The others run in
this process: SIGTERM reaches the handler Lightning installs during ``fit`` here as it would there.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.cli.helpers import build_cli, command_error, glue_args, read_metrics_csv

pytestmark = pytest.mark.slow  # runs the command line end to end

SIGNAL_STEP = 9
RUN_TIMEOUT_S = 300


def fit_args(root: Path) -> list[str]:
    return [
        *glue_args("sst2", root),
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "6",
        "--data.init_args.batch_size", "16",
        "--resume_checkpoint.every_n_train_steps", "2",
        "--model.init_args.model_config.classifier_dropout", "0.1",
    ]  # fmt: skip


def fit_until_killed(*args: str) -> None:
    """Run ``fit …`` in a forked child process and check that SIGKILL ended it (its output goes to the
    test's captured output)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest, whatever happens
        status = 3
        try:
            build_cli("fit", *args)
            status = 4  # the run ended without being killed
        finally:
            os._exit(status)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (waited := os.waitpid(pid, os.WNOHANG)) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"the run to be killed did not end in {RUN_TIMEOUT_S} s")
        time.sleep(0.1)
    status = waited[1]
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
        f"the run ended with exit status {os.waitstatus_to_exitcode(status)} instead of SIGKILL"
    )


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run on one thread (forked children included): the same arithmetic in the interrupted, the
    resumed and the reference runs, which must agree to 1e-6."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit_in_process(*args: str, expected_status: int = 0) -> None:
    """Run ``fit …`` in this process; check its exit status (0: it returns; SIGTERM: 143 through
    SystemExit, as ``python -m neobert_tasks`` exits)."""
    if expected_status == 0:
        build_cli("fit", *args)
        return
    with pytest.raises(SystemExit) as exit_info:
        build_cli("fit", *args)
    assert exit_info.value.code == expected_status


def interrupted_args(root: Path, signal_name: str, callback: str = "SignalAtStep", step: int = SIGNAL_STEP):
    return [
        *fit_args(root),
        f"--trainer.callbacks+=tests.cli.interrupt.{callback}",
        f"--trainer.callbacks.step={step}",
        f"--trainer.callbacks.signal_name={signal_name}",
    ]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("uninterrupted")
    fit_in_process(*fit_args(root))
    return root / "runs" / "version_0"


def assert_same_final_state(resumed: Path, reference: Path) -> None:
    """One last.ckpt, at step 12, with the same weights and optimizer state."""
    assert sorted(path.name for path in (resumed / "checkpoints").glob("last*")) == ["last.ckpt"]
    final, expected = (
        load(resumed / "checkpoints" / "last.ckpt"),
        load(reference / "checkpoints" / "last.ckpt"),
    )
    assert final["global_step"] == expected["global_step"] == 12
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)
    optimizer, expected_optimizer = final["optimizer_states"][0], expected["optimizer_states"][0]
    for key, state in expected_optimizer["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(optimizer["state"][key][name], value, rtol=0, atol=1e-6)


def assert_same_run(resumed: Path, reference: Path) -> None:
    """Same final weights, optimizer state, step, best checkpoint and scores, and metrics.csv history; one
    last.ckpt."""
    assert_same_final_state(resumed, reference)
    summary, expected_summary = (
        json.loads((run / "metrics.json").read_text()) for run in (resumed, reference)
    )
    assert summary["best_metrics"] == pytest.approx(expected_summary["best_metrics"], abs=1e-6)
    assert Path(summary["best_checkpoint"]).name == Path(expected_summary["best_checkpoint"]).name
    history, expected_history = read_metrics_csv(resumed), read_metrics_csv(reference)
    assert history.keys() == expected_history.keys()
    for name, values in expected_history.items():
        assert history[name] == pytest.approx(values, abs=1e-5), name


def test_sigkill_mid_epoch_then_resume_equals_the_uninterrupted_run(tmp_path, uninterrupted, caplog, recwarn):
    fit_until_killed(*interrupted_args(tmp_path, "SIGKILL"))
    run_dir = tmp_path / "runs" / "version_0"
    assert not (run_dir / "metrics.json").exists()  # a killed run is not passed off as a result
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == SIGNAL_STEP - 1
    assert not list((run_dir / "checkpoints").glob("*.tmp"))  # no half-written checkpoint left behind

    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last")
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in caplog.text
    assert not (tmp_path / "runs" / "version_1").exists()  # the resumed run continues in its own folder
    assert_same_run(run_dir, uninterrupted)
    # Lightning's "your dataloader is not resumable … unreliable results": the datamodule resumed it.
    assert not [str(warning.message) for warning in recwarn if "resum" in str(warning.message)]


def test_a_resume_that_saves_at_other_steps_keeps_the_history_quietly(tmp_path, uninterrupted, recwarn):
    """The step checkpoint's state is found whatever its every_n_train_steps: Lightning looked it up under
    a key holding the setting, so a resume that changed it lost the step where metrics.csv is cut."""
    fit_until_killed(*interrupted_args(tmp_path, "SIGKILL"))
    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last", "--resume_checkpoint.every_n_train_steps", "3")
    assert_same_run(tmp_path / "runs" / "version_0", uninterrupted)
    messages = [str(warning.message) for warning in recwarn]
    assert not [message for message in messages if "callbacks used to create" in message]


def test_a_resume_that_changes_the_batching_says_what_it_costs(tmp_path, recwarn):
    fit_until_killed(*interrupted_args(tmp_path, "SIGKILL"))
    # validate trains nothing: the same checkpoint with other batching is no cause for the warning.
    last = tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    build_cli(
        "validate",
        *fit_args(tmp_path / "validate"),
        "--ckpt_path",
        str(last),
        "--data.init_args.batch_size",
        "8",
    )
    assert not [warning for warning in recwarn if "Resuming" in str(warning.message)]
    shutil.copytree(tmp_path / "runs", tmp_path / "copy" / "runs")
    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last", "--data.init_args.batch_size", "8")
    messages = [str(warning.message) for warning in recwarn if "Resuming" in str(warning.message)]
    assert messages == [
        "Resuming in the middle of epoch 1 with data.init_args.batch_size 8 instead of 16: the rest of the"
        " epoch skips the first 2 batches of the new batching, not the examples the checkpoint trained, so"
        " some are trained twice in this epoch and others not at all; resume with the checkpoint's settings"
        " to go on exactly."
    ]
    # Other training rows with the same options (a data file edited, or its rows shuffled): said too.
    recwarn.clear()
    fit_in_process(
        *fit_args(tmp_path / "copy"), "--ckpt_path", "last", "--data.init_args.limit_train_samples", "90"
    )
    messages = [str(warning.message) for warning in recwarn if "Resuming" in str(warning.message)]
    assert (
        len(messages) == 1
        and "with other training data (other rows, or the same in another order)" in messages[0]
    )


def test_sigterm_saves_a_checkpoint_and_resumes_to_the_same_result(tmp_path, uninterrupted, capsys):
    fit_in_process(*interrupted_args(tmp_path, "SIGTERM"), expected_status=143)
    run_dir = tmp_path / "runs" / "version_0"
    command = f"python -m neobert_tasks fit --config {run_dir / 'config.yaml'} --ckpt_path last"
    assert f"neobert_tasks: stopped by SIGTERM; resume with `{command}`." in capsys.readouterr().err
    # SIGTERM arrives as step 9 starts; Lightning finishes that batch, then the checkpoint is written.
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == SIGNAL_STEP + 1

    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last")
    assert_same_run(run_dir, uninterrupted)


def assert_same_final_weights(resumed: Path, reference: Path, steps: int) -> None:
    """The resumed run's last.ckpt holds the reference run's final step and weights."""
    final, expected = (load(run / "checkpoints" / "last.ckpt") for run in (resumed, reference))
    assert final["global_step"] == expected["global_step"] == steps
    for name, tensor in expected["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=0, atol=1e-6, msg=name)


def test_sigterm_inside_a_gradient_accumulation_stops_after_its_step_and_resumes_to_the_same_result(
    tmp_path,
):
    """Lightning stopped after the step's first batch and the resume started at the next: a batch lost."""
    accumulate = ["--trainer.accumulate_grad_batches", "2"]  # 3 optimizer steps an epoch
    fit_in_process(*fit_args(tmp_path / "reference"), *accumulate)
    # The signal comes as step 3's first batch starts (and again at its second).
    fit_in_process(*interrupted_args(tmp_path, "SIGTERM", step=3), *accumulate, expected_status=143)
    run_dir = tmp_path / "runs" / "version_0"
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4  # after both its batches
    fit_in_process(*fit_args(tmp_path), *accumulate, "--ckpt_path", "last")
    assert_same_final_weights(run_dir, tmp_path / "reference" / "runs" / "version_0", steps=6)


def test_sigterm_in_the_epoch_end_validation_with_accumulation_resumes_to_the_same_result(tmp_path):
    """With the ranks agreeing on when to stop (accumulation, or DDP), the stop came after the epoch's last
    validation, before the epoch's end: the resume found an epoch with no batch left and no score, and the
    config's EarlyStopping refused it."""
    accumulate = ["--trainer.accumulate_grad_batches", "2"]  # 3 optimizer steps an epoch
    fit_in_process(*fit_args(tmp_path / "reference"), *accumulate)
    arguments = interrupted_args(tmp_path, "SIGTERM", "SignalInValidation", step=3)
    fit_in_process(*arguments, *accumulate, expected_status=143)
    run_dir = tmp_path / "runs" / "version_0"
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4  # the next epoch's first step
    fit_in_process(*fit_args(tmp_path), *accumulate, "--ckpt_path", "last")
    assert_same_final_weights(run_dir, tmp_path / "reference" / "runs" / "version_0", steps=6)


def test_a_moved_run_folder_resumes_in_its_new_place_to_the_same_result(tmp_path, uninterrupted):
    fit_in_process(*interrupted_args(tmp_path / "old", "SIGTERM"), expected_status=143)
    moved = tmp_path / "new" / "my_run"  # moved and renamed
    moved.parent.mkdir()
    (tmp_path / "old" / "runs" / "version_0").rename(moved)
    # Its config.yaml records the old root: the run went on there, in a new folder, and died at the export.
    build_cli("fit", "--config", moved / "config.yaml", "--ckpt_path", "last")
    assert not (tmp_path / "old" / "runs" / "version_0").exists()
    assert_same_run(moved, uninterrupted)  # the best score carried over: Lightning dropped it as "moved"
    assert (moved / "export" / "model.safetensors").is_file()


def test_a_learning_rate_changed_for_a_resume_is_the_one_used(tmp_path, caplog):
    fit_in_process(*interrupted_args(tmp_path, "SIGTERM"), expected_status=143)
    changed = ["--model.init_args.learning_rate", "1e-4", "--model.init_args.weight_decay", "0.5"]
    with caplog.at_level("INFO"):
        fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last", *changed)
    assert (
        "Resumed at step 10 with a changed learning_rate, weight_decay: the new value applies" in caplog.text
    )
    final = load(tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt")
    groups = final["optimizer_states"][0]["param_groups"]
    assert {group["initial_lr"] for group in groups} == {1e-4}  # was the checkpoint's, silently
    assert {group["weight_decay"] for group in groups} == {0.5, 0.0}  # norms and biases keep none
    assert final["lr_schedulers"][0]["base_lrs"] == [1e-4] * len(groups)


def test_ctrl_c_saves_a_checkpoint_says_how_to_go_on_and_resumes_to_the_same_result(
    tmp_path, uninterrupted, caplog
):
    """The first Ctrl-C stops as SIGTERM does, after the running step, with status 130 (Lightning's own
    handling exits at once, unsaved); a second one would stop at once, so the handler is gone afterwards."""
    fit_in_process(*interrupted_args(tmp_path, "SIGINT"), expected_status=130)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    run_dir = tmp_path / "runs" / "version_0"
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == SIGNAL_STEP + 1
    assert not (run_dir / "metrics.json").exists()
    message = caplog.text
    assert f"Stopped by Ctrl-C at step {SIGNAL_STEP + 1} (epoch 1)" in message
    assert f"fit --config {run_dir / 'config.yaml'} --ckpt_path last" in message
    assert "best so far val/accuracy" in message and f"--trainer.max_steps {SIGNAL_STEP + 1}" in message
    assert "Received SIGTERM: 15" not in message  # Lightning's line, which would name the wrong signal

    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last")
    assert_same_run(run_dir, uninterrupted)


def test_ctrl_c_in_the_sanity_check_saves_nothing_and_says_so(tmp_path, capsys):
    arguments = [*fit_args(tmp_path), "--trainer.num_sanity_val_steps", "2"]
    arguments += ["--trainer.callbacks+=tests.cli.interrupt.SignalInSanityCheck"]
    fit_in_process(*arguments, expected_status=130)
    assert "interrupted before the first step; nothing to save" in capsys.readouterr().err
    # Nothing of the run is kept: `fit --ckpt_path last` starts afresh in version_0, not beside an empty one.
    assert not (tmp_path / "runs" / "version_0").exists()


def test_ctrl_c_then_end_here_exports_the_best_model_without_training(tmp_path):
    fit_in_process(*interrupted_args(tmp_path, "SIGINT"), expected_status=130)
    run_dir = tmp_path / "runs" / "version_0"
    stopped = load(run_dir / "checkpoints" / "last.ckpt")
    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last", "--trainer.max_steps", str(SIGNAL_STEP + 1))
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert Path(summary["best_checkpoint"]).name == "epoch=0-step=6.ckpt"  # the only validation so far
    assert (run_dir / "export" / "model.safetensors").is_file()
    final = load(run_dir / "checkpoints" / "last.ckpt")
    assert final["global_step"] == SIGNAL_STEP + 1
    for name, tensor in stopped["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], tensor, rtol=0, atol=0, msg=name)


def training_position(checkpoint: Path) -> dict:
    """The datamodule's record of where training stood in its epoch."""
    saved = load(checkpoint).values()
    return next(value for value in saved if isinstance(value, dict) and "train_epoch" in value)


def test_fits_ended_by_max_steps_inside_epochs_go_on_to_the_same_weights(tmp_path):
    """``--trainer.max_steps`` ends a fit inside epoch 0 (step 4), a resume ends inside epoch 1 (step 9), a
    last one trains to the end: the uninterrupted run's weights. A schedule that does not depend on the
    run's length (``max_steps`` sets it), so that the stages' learning rates are the reference's. Each stop
    first validates its final weights (`neobert_tasks.final_validation`), which Lightning left unscored."""
    schedule = ("--model.init_args.lr_schedule", "constant", "--model.init_args.warmup_steps", "2")
    reference_root, resumed_root = tmp_path / "reference", tmp_path / "resumed"
    fit_in_process(*fit_args(reference_root), *schedule)
    run_dir = resumed_root / "runs" / "version_0"
    last = run_dir / "checkpoints" / "last.ckpt"
    fit_in_process(*fit_args(resumed_root), *schedule, "--trainer.max_steps", "4")
    assert (training_position(last)["train_epoch"], training_position(last)["train_batches_done"]) == (0, 4)
    fit_in_process(*fit_args(resumed_root), *schedule, "--ckpt_path", "last", "--trainer.max_steps", "9")
    assert (training_position(last)["train_epoch"], training_position(last)["train_batches_done"]) == (1, 3)
    fit_in_process(*fit_args(resumed_root), *schedule, "--ckpt_path", "last")
    assert_same_final_state(run_dir, reference_root / "runs" / "version_0")
    with (run_dir / "metrics.csv").open(newline="") as handle:
        validations = [int(row["step"]) + 1 for row in csv.DictReader(handle) if row["val/accuracy"]]
    assert validations == [4, 6, 9, 12]  # the stops', and each epoch's end


def test_a_step_based_fit_ended_with_its_epoch_resumes_into_the_next_epoch(tmp_path):
    """With ``trainer.max_steps`` set (the embedding configs' way), Lightning restored a checkpoint saved as
    an epoch ended as that epoch still ending and counted it twice: a resume with more epochs trained none
    (`neobert_tasks.lightning_private.count_ended_epoch_once`). Here it ends as the uninterrupted run does,
    with the same logged steps."""
    step_based = (
        "--trainer.max_steps",
        "100",
        "--model.init_args.lr_schedule",
        "constant",
        "--model.init_args.warmup_steps",
        "2",
    )
    reference_root, resumed_root = tmp_path / "reference", tmp_path / "resumed"
    fit_in_process(*fit_args(reference_root), *step_based)
    fit_in_process(*fit_args(resumed_root), *step_based, "--trainer.max_epochs", "1")
    run_dir = resumed_root / "runs" / "version_0"
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    with pytest.warns(UserWarning, match="schedule now spans 12 optimizer steps"):
        fit_in_process(*fit_args(resumed_root), *step_based, "--ckpt_path", "last")
    assert_same_run(run_dir, reference_root / "runs" / "version_0")  # metrics.csv's steps included


# Validation runs after step 6 (the end of epoch 0); the signal comes as its second batch starts.
VALIDATION_STEP = 6


def test_a_resume_past_max_steps_says_that_nothing_is_trained(tmp_path):
    fit_in_process(*fit_args(tmp_path))
    with pytest.warns(UserWarning, match=r"is at step 12, past trainer.max_steps 3: nothing is trained"):
        fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last", "--trainer.max_steps", "3")
    assert load(tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt")["global_step"] == 12


def test_a_resume_with_more_epochs_says_that_the_schedule_is_planned_anew(tmp_path, recwarn):
    fit_in_process(*fit_args(tmp_path))
    assert not [warning for warning in recwarn if "schedule" in str(warning.message)]
    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last", "--trainer.max_epochs", "3")
    messages = [str(warning.message) for warning in recwarn if "schedule" in str(warning.message)]
    assert len(messages) == 1
    assert messages[0].startswith("The learning-rate schedule now spans 18 optimizer steps where the run of")
    assert "planned 12" in messages[0] and "from step 12 the rate follows the new plan" in messages[0]


def test_a_run_ended_by_early_stopping_is_finished_for_a_resume(tmp_path, capsys):
    """Lightning does not save that early stopping ended the fit: `fit --ckpt_path last`, which job scripts
    always pass, trained another epoch each time, with new rows in metrics.csv and a new last.ckpt."""
    # A learning rate too small to move the accuracy: SST-2's patience of 3 validations ends it at epoch 3.
    args = [*fit_args(tmp_path), "--trainer.max_epochs", "10", "--model.init_args.learning_rate", "1e-9"]
    fit_in_process(*args)
    assert (
        "Stopped early: Monitored metric val/accuracy did not improve in the last 3 records"
        in capsys.readouterr().out
    )
    run_dir = tmp_path / "runs" / "version_0"
    files = [
        run_dir / "metrics.csv",
        run_dir / "checkpoints" / "last.ckpt",
        run_dir / "export" / "model.safetensors",
    ]
    before = [path.read_bytes() for path in files[:2]]
    steps = load(files[1])["global_step"]
    assert steps < 10 * 6
    with pytest.warns(
        UserWarning, match=r"was ended by early stopping \(Monitored metric val/accuracy .*\): it is finished"
    ):
        fit_in_process(*args, "--ckpt_path", "last")
    assert load(files[1])["global_step"] == steps
    assert files[0].read_bytes() == before[0]


def test_epochs_that_check_val_every_n_epoch_never_validates_are_warned_of(tmp_path, recwarn):
    fit_in_process(*fit_args(tmp_path), "--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "2")
    messages = [
        str(warning.message) for warning in recwarn if "check_val_every_n_epoch" in str(warning.message)
    ]
    assert messages == [
        "trainer.max_epochs 3 is not a multiple of trainer.check_val_every_n_epoch 2: the last 1 epoch(s)"
        " train without a validation, so their weights can never be the best checkpoint; make max_epochs a"
        " multiple of it."
    ]


def test_sigterm_during_validation_resumes_into_that_validation(tmp_path, uninterrupted):
    """The GLUE configs' EarlyStopping needs that validation's score, and the best model may be its."""
    arguments = interrupted_args(tmp_path, "SIGTERM", "SignalInValidation", VALIDATION_STEP)
    fit_in_process(*arguments, expected_status=143)
    run_dir = tmp_path / "runs" / "version_0"
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == VALIDATION_STEP
    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last")
    assert_same_run(run_dir, uninterrupted)


def test_sigterm_during_a_validate_command_leaves_the_run_checkpoint_alone(tmp_path, uninterrupted, capsys):
    """It used to save the validate's state over the evaluated run's last.ckpt: step 0, no optimizer."""
    checkpoint = uninterrupted / "checkpoints" / "last.ckpt"
    before = checkpoint.read_bytes()
    # A validate command counts no steps: its trainer's global_step is 0, whatever the checkpoint's.
    arguments = interrupted_args(tmp_path, "SIGTERM", "SignalInValidation", step=0)
    with pytest.raises(SystemExit) as exit_info:
        build_cli("validate", *arguments, "--ckpt_path", str(checkpoint))
    assert exit_info.value.code == 128 + signal.SIGTERM
    assert checkpoint.read_bytes() == before
    assert "validate stopped by SIGTERM; nothing was written" in capsys.readouterr().err


def test_sigkill_during_validation_resumes_to_the_same_result(tmp_path, uninterrupted):
    arguments = interrupted_args(tmp_path, "SIGKILL", "SignalInValidation", VALIDATION_STEP)
    fit_until_killed(*arguments)
    run_dir = tmp_path / "runs" / "version_0"
    # The step save before a validation is left to the best-model checkpoint, after it: step 4 is newest.
    assert load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == VALIDATION_STEP - 2
    fit_in_process(*fit_args(tmp_path), "--ckpt_path", "last")
    assert_same_run(run_dir, uninterrupted)


def test_token_budget_batches_resume_to_the_same_result(tmp_path):
    """Batches sized by ``max_tokens`` (a different sampler and a loader without ``batch_size``) resume
    mid-epoch exactly too."""
    budget = ("--data.init_args.max_tokens", "256")
    reference_root, resumed_root = tmp_path / "reference", tmp_path / "resumed"
    fit_in_process(*fit_args(reference_root), *budget)
    fit_until_killed(*interrupted_args(resumed_root, "SIGKILL"), *budget)
    fit_in_process(*fit_args(resumed_root), *budget, "--ckpt_path", "last")
    assert_same_run(resumed_root / "runs" / "version_0", reference_root / "runs" / "version_0")


def test_lora_run_resumes_to_the_same_result(tmp_path):
    """LoRA checkpoints hold the adapters and the head only; the frozen backbone is rebuilt (here from the
    seed of the random tiny model) and the resumed run still ends exactly as the uninterrupted one."""
    pytest.importorskip("peft", reason="the peft extra is not installed")
    lora = ("--model.init_args.peft", "{r: 4}")
    reference_root, resumed_root = tmp_path / "reference", tmp_path / "resumed"
    fit_in_process(*fit_args(reference_root), *lora)
    fit_until_killed(*interrupted_args(resumed_root, "SIGKILL"), *lora)
    run_dir = resumed_root / "runs" / "version_0"
    saved = load(run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(".lora_" in name or ".modules_to_save." in name for name in saved)
    fit_in_process(*fit_args(resumed_root), *lora, "--ckpt_path", "last")
    assert_same_run(run_dir, reference_root / "runs" / "version_0")


def test_truncated_checkpoint_is_reported_by_path(tmp_path, uninterrupted, capsys):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes((uninterrupted / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    # Exit status 2, no traceback, one line: `neobert_tasks: error: <message>` (see command_error).
    message = command_error(capsys, "fit", *fit_args(tmp_path), "--ckpt_path", str(broken), tmp_path=tmp_path)
    assert message.startswith(f"Checkpoint '{broken}' is corrupt or truncated")


class _CreatesAFile:
    """Unpickling this would create ``path``: what a malicious checkpoint does with a real payload."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("subcommand", ["fit", "predict"])
def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, uninterrupted, subcommand, capsys):
    marker = tmp_path / "code_ran"
    checkpoint = load(uninterrupted / "checkpoints" / "last.ckpt")
    checkpoint["payload"] = _CreatesAFile(marker)
    malicious = tmp_path / "malicious.ckpt"
    torch.save(checkpoint, malicious, pickle_protocol=pickle.HIGHEST_PROTOCOL)

    message = command_error(
        capsys, subcommand, *fit_args(tmp_path), "--ckpt_path", malicious, tmp_path=tmp_path
    )
    assert message.startswith(f"Checkpoint '{malicious}' holds Python objects other than tensors")
    assert not marker.exists()
