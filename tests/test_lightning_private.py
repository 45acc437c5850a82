"""The Lightning internals of `neobert_tasks.lightning_private` still exist and behave as relied on.

Each test names the internal it checks, so that a Lightning upgrade that removes or changes one fails here,
by name, rather than as an evaluation that counts examples twice, a resume that skips a validation, or
options typed for ``predict`` silently replaced by a checkpoint's.
"""

from __future__ import annotations

import inspect
import sys
from unittest import mock

import lightning as L
import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.demos.boring_classes import BoringModel
from torch.utils.data import DistributedSampler

from neobert_tasks.lightning_private import (
    UNRESUMABLE_LOADER_WARNING,
    UnrepeatedDistributedSampler,
    count_ended_epoch_once,
    hide_result_table,
    ignore_unresumable_loader_warning,
    validation_follows,
)
from neobert_tasks.run_summary import ResultTable


def test_unrepeated_sampler_gives_each_example_to_one_rank_without_padding():
    shards = [
        list(UnrepeatedDistributedSampler(range(5), num_replicas=2, rank=rank, shuffle=False))
        for rank in (0, 1)
    ]
    assert shards == [[0, 2, 4], [1, 3]]
    assert issubclass(UnrepeatedDistributedSampler, DistributedSampler)
    sampler = UnrepeatedDistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False)
    # LengthSortedEvalSampler reads these DistributedSampler attributes.
    assert (sampler.rank, sampler.num_replicas, len(sampler)) == (1, 2, 2)


def test_the_fit_loop_still_has_what_validation_follows_reads():
    epoch_loop = L.Trainer(logger=False, enable_checkpointing=False).fit_loop.epoch_loop
    parameters = list(inspect.signature(epoch_loop._should_check_val_fx).parameters)
    assert parameters == ["data_fetcher"]
    assert hasattr(L.Trainer(logger=False).fit_loop, "_data_fetcher")


class ValidationFollows(L.Callback):
    def __init__(self):
        self.answers = []

    def on_train_batch_end(self, trainer, *args):
        self.answers.append(validation_follows(trainer))


@pytest.mark.slow
def test_validation_follows_the_batches_before_each_validation(tmp_path):
    torch.set_num_threads(1)
    recorder = ValidationFollows()
    options = dict(limit_train_batches=6, val_check_interval=3, limit_val_batches=1, num_sanity_val_steps=0)
    quiet = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", max_epochs=1, callbacks=[recorder], **options, **quiet
    )
    trainer.fit(BoringModel())
    assert recorder.answers == [False, False, True, False, False, True]


class TwoTestSets(BoringModel):
    def test_dataloader(self):
        return [super().test_dataloader(), super().test_dataloader()]

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        return super().test_step(batch, batch_idx)

    def on_test_epoch_end(self):
        self.log("test/score", 1.0, add_dataloader_idx=False)  # once, at the end, as the tasks log


class HideAtStart(L.Callback):
    def on_test_start(self, trainer, pl_module):
        hide_result_table(trainer)


@pytest.mark.slow
@pytest.mark.parametrize("callback", [None, HideAtStart(), ResultTable()])
def test_hide_result_table_silences_the_running_tests_table(callback, tmp_path, capsys):
    """The table shows the one score under both dataloaders; hidden once the test has started, it does not."""
    quiet = dict(
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    callbacks = [callback] if callback else []
    trainer = L.Trainer(
        default_root_dir=tmp_path, accelerator="cpu", limit_test_batches=1, callbacks=callbacks, **quiet
    )
    trainer.test(TwoTestSets())
    out = capsys.readouterr().out
    assert ("DataLoader 1" in out) is (callback is None)
    assert trainer.callback_metrics["test/score"] == 1.0


class Stop(Exception):
    """Ends the CLI once the hooks under test have run."""


class Width(BoringModel):
    def __init__(self, width: int = 4):
        super().__init__()
        self.save_hyperparameters()


class HookOrderCLI(LightningCLI):
    """Records ``model.width`` as each hook sees it, and stops before anything is instantiated."""

    seen: dict[str, int] = {}

    def parse_arguments(self, parser, args):
        super().parse_arguments(parser, args)
        HookOrderCLI.seen["parse_arguments"] = self.config.validate.model.width

    def before_instantiate_classes(self):
        HookOrderCLI.seen["before_instantiate_classes"] = self.config.validate.model.width
        raise Stop


@pytest.mark.slow  # builds a LightningCLI (stopped before it instantiates anything)
def test_checkpoint_hyperparameters_are_applied_between_parse_arguments_and_before_instantiate(tmp_path):
    """`neobert_tasks.cli.NeoBERTCLI` puts typed model options back in `before_instantiate_classes`."""
    checkpoint = tmp_path / "width.ckpt"
    torch.save({"hyper_parameters": {"width": 8}, "state_dict": {}}, checkpoint)
    with mock.patch.object(sys, "argv", ["cli"]), pytest.raises(Stop):
        HookOrderCLI(Width, args=["validate", "--ckpt_path", str(checkpoint)])
    assert HookOrderCLI.seen == {"parse_arguments": 4, "before_instantiate_classes": 8}


class SaveAtStep(L.Callback):
    def __init__(self, path, step: int):
        self.path, self.step = path, step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)


@pytest.mark.slow
def test_lightning_warns_of_a_mid_epoch_resume_in_the_words_that_are_ignored(tmp_path, recwarn):
    """A plain DataLoader resumed inside an epoch draws Lightning's warning, starting with the words
    `ignore_unresumable_loader_warning` filters; after that call it is not shown."""
    checkpoint = tmp_path / "mid_epoch.ckpt"
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    options = dict(default_root_dir=tmp_path, limit_train_batches=4, limit_val_batches=0, **quiet)
    L.Trainer(max_steps=2, callbacks=[SaveAtStep(checkpoint, 2)], **options).fit(BoringModel())
    for ignored in (False, True):
        recwarn.clear()
        if ignored:
            ignore_unresumable_loader_warning()
        L.Trainer(max_steps=3, enable_checkpointing=False, **options).fit(BoringModel(), ckpt_path=checkpoint)
        warned = [str(warning.message) for warning in recwarn if "not resumable" in str(warning.message)]
        assert len(warned) == int(not ignored)
        assert not warned or warned[0].startswith(UNRESUMABLE_LOADER_WARNING)


class SaveAtEpochEnd(L.Callback):
    def __init__(self, path):
        self.path = path

    def on_train_epoch_end(self, trainer, pl_module):
        trainer.save_checkpoint(self.path)


class CountEndedEpochOnce(L.Callback):
    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        count_ended_epoch_once(trainer, checkpoint)


class TrainedBatches(L.Callback):
    def __init__(self):
        self.epochs = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.epochs.append(trainer.current_epoch)


@pytest.mark.slow
def test_a_step_based_resume_from_an_ended_epoch_counts_that_epoch_once(tmp_path):
    """Lightning still counts the ended epoch of such a checkpoint twice, so that the next one never trains
    (if this starts failing on the first run, Lightning fixed it and `count_ended_epoch_once` can go); with
    the rewrite, the next epoch trains all its batches and the step count goes on."""
    checkpoint = tmp_path / "epoch_end.ckpt"
    quiet = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    options = dict(
        default_root_dir=tmp_path, limit_train_batches=4, limit_val_batches=0, max_steps=100, **quiet
    )
    L.Trainer(max_epochs=1, callbacks=[SaveAtEpochEnd(checkpoint)], **options).fit(BoringModel())
    for rewritten in (False, True):
        trained = TrainedBatches()
        callbacks = [trained, CountEndedEpochOnce()] if rewritten else [trained]
        trainer = L.Trainer(max_epochs=2, enable_checkpointing=False, callbacks=callbacks, **options)
        trainer.fit(BoringModel(), ckpt_path=checkpoint)
        if rewritten:
            assert trained.epochs == [1, 1, 1, 1] and trainer.global_step == 8
        else:  # Lightning 2.6: one stray batch counted in epoch 0, then "max_epochs=2 reached"
            assert trained.epochs != [1, 1, 1, 1] and trainer.global_step < 8
