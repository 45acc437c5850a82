"""`neobert_tasks.console`: Lightning's dropped info lines (and the kept ones), the one-line model summary,
the library deprecation filter, and the progress-bar switches that put the libraries' state back."""

from __future__ import annotations

import logging
import warnings

import datasets
import huggingface_hub.utils as hub_utils
import pytest
import torch
import torchmetrics
import transformers.utils.logging as transformers_logging

from neobert_tasks.console import (
    PACKAGE_DIRECTORY,
    RANK_ZERO_LOGGER,
    CompactModelSummary,
    LightningChatterFilter,
    datasets_progress_bars_off,
    ignore_library_warnings,
    quiet_libraries,
    transformers_progress_bars_off,
)
from tests.unit.tiny_training import TinyRegression, tiny_trainer

DROPPED = [
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://pypi.org/"
    "project/litlogger/) to enable LitLogger, which logs metrics and artifacts automatically.",
    "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels](https://pypi.org/project/"
    "litmodels/) to enable LitModelCheckpoint, which syncs automatically with the Lightning model registry.",
    "GPU available: False, used: False",
    "GPU available: True (cuda), used: True",
    "TPU available: False, using: 0 TPU cores",
    "HPU available: False, using: 0 HPUs",
    "Loading `train_dataloader` to estimate number of stepping batches.",
    "Trainer already configured with model summary callbacks: [<class 'CompactModelSummary'>]. Skipping"
    " setting a default `ModelSummary` callback.",
]
KEPT = [
    "Seed set to 0",
    "`Trainer.fit` stopped: `max_epochs=3` reached.",
    "Resuming from runs/version_0/checkpoints/last.ckpt",
    "Restoring states from the checkpoint path at runs/version_0/checkpoints/last.ckpt",
]


def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(RANK_ZERO_LOGGER, level, __file__, 1, message, None, None)


@pytest.mark.parametrize("message", DROPPED)
def test_the_filter_drops_lightnings_adverts_device_lines_and_internal_steps(message):
    assert not LightningChatterFilter().filter(record(message))


@pytest.mark.parametrize("message", KEPT)
def test_the_filter_keeps_lightnings_other_info_lines(message):
    assert LightningChatterFilter().filter(record(message))


def test_the_filter_keeps_a_warning_whatever_it_says():
    assert LightningChatterFilter().filter(record("GPU available: True (cuda), used: False", logging.WARNING))


class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def rank_zero_messages(monkeypatch):
    """What reaches the handlers of Lightning's rank-zero logger, with the filters of `quiet_libraries`
    installed for this test only."""
    logger = logging.getLogger(RANK_ZERO_LOGGER)
    monkeypatch.setattr(logger, "filters", list(logger.filters))
    quiet_libraries()
    quiet_libraries()
    assert sum(isinstance(each, LightningChatterFilter) for each in logger.filters) == 1
    collect = Collect()
    logger.addHandler(collect)
    yield collect.messages
    logger.removeHandler(collect)


def test_a_fit_logs_the_summary_line_but_no_adverts_device_lines_or_flops(tmp_path, rank_zero_messages):
    module = TinyRegression()
    module.metrics = torch.nn.ModuleDict()  # like a task's metric collections: no parameters, not named
    trainer = tiny_trainer(tmp_path, [CompactModelSummary()], max_steps=1, limit_val_batches=0)
    trainer.fit(module)
    assert rank_zero_messages == [
        "Model: Linear in TinyRegression, 5 parameters (5 trainable), 0.0 MB",
        "`Trainer.fit` stopped: `max_steps=1` reached.",
    ]


def test_the_summary_counts_frozen_parameters_apart_and_can_be_turned_off(tmp_path, rank_zero_messages):
    module = TinyRegression()
    module.model.bias.requires_grad_(False)
    tiny_trainer(tmp_path / "on", [CompactModelSummary()], max_steps=1, limit_val_batches=0).fit(module)
    assert rank_zero_messages[0] == "Model: Linear in TinyRegression, 5 parameters (4 trainable), 0.0 MB"
    rank_zero_messages.clear()
    off = CompactModelSummary(enabled=False)
    tiny_trainer(tmp_path / "off", [off], max_steps=1, limit_val_batches=0).fit(TinyRegression())
    assert not any(message.startswith("Model:") for message in rank_zero_messages)


def test_the_leafspec_deprecation_is_ignored_and_other_deprecations_are_not():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ignore_library_warnings()
        message = (
            "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
        )
        warnings.warn(message, FutureWarning, stacklevel=1)
        warnings.warn("`LeafSpec` is deprecated", FutureWarning, stacklevel=1)
        torchmetrics.SpearmanCorrCoef()  # "will save all targets and predictions in the buffer"
        warnings.warn(  # Lightning's, once per score under DDP (the rank-0 text of its warning)
            "It is recommended to use `self.log('val/f1', ..., sync_dist=True)` when logging on epoch level"
            " in distributed setting to accumulate the metric across devices.",
            stacklevel=1,
        )
        warnings.warn("It is recommended to use `self.log` with care", stacklevel=1)
    assert [str(warning.message) for warning in caught] == [
        "`LeafSpec` is deprecated",
        "It is recommended to use `self.log` with care",
    ]


def test_the_packages_own_warnings_read_as_one_line_and_others_as_before():
    default = warnings.formatwarning
    try:
        quiet_libraries()
        quiet_libraries()  # installed once
        own = str(PACKAGE_DIRECTORY / "cli.py")
        assert warnings.formatwarning(UserWarning("No validation split."), UserWarning, own, 188, "code") == (
            "neobert_tasks: warning: No validation split.\n"
        )
        other = warnings.formatwarning(UserWarning("theirs"), UserWarning, "/elsewhere/lib.py", 3, "code")
        assert other == default(UserWarning("theirs"), UserWarning, "/elsewhere/lib.py", 3, "code")
    finally:
        warnings.formatwarning = default


@pytest.fixture
def restore_progress_bars():
    """Put the libraries' progress bars back as they were, whatever the test did."""
    states = (
        datasets.is_progress_bar_enabled(),
        transformers_logging.is_progress_bar_enabled(),
        hub_utils.are_progress_bars_disabled(),
    )
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        (datasets.enable_progress_bars if states[0] else datasets.disable_progress_bars)()
        (
            transformers_logging.enable_progress_bar
            if states[1]
            else transformers_logging.disable_progress_bar
        )()
        (hub_utils.disable_progress_bars if states[2] else hub_utils.enable_progress_bars)()


@pytest.mark.usefixtures("restore_progress_bars")
@pytest.mark.parametrize("enabled_before", [True, False])
def test_datasets_progress_bars_are_off_within_the_block_and_as_before_after_it(enabled_before):
    (datasets.enable_progress_bars if enabled_before else datasets.disable_progress_bars)()
    with pytest.raises(RuntimeError), datasets_progress_bars_off():
        assert not datasets.is_progress_bar_enabled()
        raise RuntimeError("a failed load")
    assert datasets.is_progress_bar_enabled() == enabled_before


@pytest.mark.usefixtures("restore_progress_bars")
@pytest.mark.parametrize("enabled_before", [True, False])
@pytest.mark.parametrize("hub_disabled_before", [True, False])
def test_transformers_progress_bars_are_off_within_the_block_and_as_before_after_it(
    enabled_before, hub_disabled_before
):
    (
        transformers_logging.enable_progress_bar
        if enabled_before
        else transformers_logging.disable_progress_bar
    )()
    (hub_utils.disable_progress_bars if hub_disabled_before else hub_utils.enable_progress_bars)()
    with pytest.raises(RuntimeError), transformers_progress_bars_off():
        assert not transformers_logging.is_progress_bar_enabled()
        raise RuntimeError("a failed save")
    assert transformers_logging.is_progress_bar_enabled() == enabled_before
    assert hub_utils.are_progress_bars_disabled() == hub_disabled_before


@pytest.mark.usefixtures("restore_progress_bars")
def test_local_split_files_load_without_a_generating_bar(tmp_path, capfd):
    from neobert_tasks.data.sources import load_local_splits

    datasets.enable_progress_bars()
    (tmp_path / "train.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    loaded, _ = load_local_splits(tmp_path, ["train"], cache_dir=str(tmp_path / "cache"))
    assert len(loaded["train"]) == 2
    assert "Generating" not in capfd.readouterr().err
    assert datasets.is_progress_bar_enabled()
