"""What the libraries print that a user of these commands does not need, silenced at its source.

Every command printed lines that say nothing about the run at hand; each is dropped for a reason:

* Lightning's info lines (`LightningChatterFilter`, on the logger behind ``rank_zero_info``): the "💡 Tip"
  adverts for litlogger and litmodels; "GPU/TPU/HPU available: ..." (the config names the accelerator,
  and Lightning still warns when a GPU is present but unused); "Loading `train_dataloader` to estimate
  number of stepping batches." (an internal step); and "Trainer already configured with model summary
  callbacks", which our own summary would otherwise cause. Lightning's warnings and its other info lines
  ("Seed set to", "`Trainer.fit` stopped: ...") are kept.
* Lightning's model summary table (`CompactModelSummary` replaces it): its FLOPs column and "Total FLOPs"
  read 0 without an example input, and its rows per submodule say little about one encoder; one line
  keeps the model, its parameters and its size.
* torch's FutureWarning that ``isinstance(treespec, LeafSpec)`` is deprecated (`ignore_library_warnings`):
  raised by Lightning's own code (``lightning/pytorch/utilities/_pytree.py``), which we cannot change;
  torchmetrics' note that Spearman's correlation buffers every prediction, which a rank correlation
  must (STS-B's and the STS sets' few thousand pairs take kilobytes); and Lightning's advice, under DDP, to
  log epoch scores with ``sync_dist``, which the tasks' scores need not (see `LIBRARY_WARNINGS`).
* The file, line and source line Python prints with a warning, for the package's own warnings
  (`format_own_warning`): they read ``neobert_tasks: warning: <message>``, as errors read
  ``neobert_tasks: error: <message>``.
* datasets' readers' "Failed to read file" log line, which the error raised next repeats
  (`datasets_reader_errors_quiet`).
* Progress bars of work too short to watch: transformers' "Writing model shards" while an export saves a
  model of one shard, and datasets' "Generating <split> split" while local files are read
  (`transformers_progress_bars_off`, `datasets_progress_bars_off`, just around those calls). The
  "Tokenizing <split>" bars stay: they show work that takes a while.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import datasets
import huggingface_hub.utils as hub_utils
import transformers.utils.logging as transformers_logging
from lightning.pytorch.callbacks import ModelSummary
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.model_summary import get_human_readable_count

PACKAGE_DIRECTORY = Path(__file__).resolve().parent
# The logger that Lightning's `rank_zero_info` writes to.
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"

# Starts of the info messages dropped from that logger (see the module docstring for why).
DROPPED_INFO = (
    "💡 Tip: ",
    "GPU available: ",
    "TPU available: ",
    "HPU available: ",
    "Loading `train_dataloader` to estimate number of stepping batches.",
    "Trainer already configured with model summary callbacks",
    "`Trainer(val_check_interval=1.0)` was configured so validation will run at the end of the training",
)

# Warnings raised inside the libraries' code, by message.
LIBRARY_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"Metric `SpearmanCorrcoef` will save all targets and predictions in the buffer",
    # Every run has a folder of its own: a non-empty checkpoints/ is the run resumed (--ckpt_path last)
    # or the run whose checkpoint validate scores, where its files belong.
    r"Checkpoint directory .* exists and is not empty",
    # Under DDP, once per logged score: the tasks log epoch scores computed over every rank's examples
    # (torchmetrics' synced states, or predictions gathered before scoring), which sync_dist would average.
    r"It is recommended to use `self.log\(.*sync_dist=True\)` when logging on epoch level",
    # train/loss is logged at each epoch's last step too (NeoBERTTask.log_training_loss), so an epoch
    # shorter than log_every_n_steps still logs it.
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # Mixed precision keeps fp32 weights: the size Lightning falls back to is the right one.
    r"Precision .* is not supported by the model summary",
)


class LightningChatterFilter(logging.Filter):
    """Drops Lightning's info messages that start with one of `DROPPED_INFO`; warnings always pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not record.getMessage().startswith(DROPPED_INFO)


def quiet_libraries() -> None:
    """Install the filters of this module; calling it again adds nothing."""
    logger = logging.getLogger(RANK_ZERO_LOGGER)
    if not any(isinstance(existing, LightningChatterFilter) for existing in logger.filters):
        logger.addFilter(LightningChatterFilter())
    ignore_library_warnings()
    if not getattr(warnings.formatwarning, "neobert_tasks", False):
        warnings.formatwarning = functools.partial(format_own_warning, warnings.formatwarning)
        warnings.formatwarning.neobert_tasks = True


def format_own_warning(default: Callable, message, category, filename, lineno, line=None) -> str:
    """``neobert_tasks: warning: <message>`` for the package's own warnings, which say all there is to say,
    instead of the file, line and source line that Python prints; others as ``default`` formats them."""
    if Path(filename).resolve().is_relative_to(PACKAGE_DIRECTORY):
        return f"neobert_tasks: warning: {message}\n"
    return default(message, category, filename, lineno, line)


def ignore_library_warnings() -> None:
    """Ignore the `LIBRARY_WARNINGS` (``warnings.filterwarnings`` itself skips a filter already present)."""
    for message in LIBRARY_WARNINGS:
        warnings.filterwarnings("ignore", message=message)


class CompactModelSummary(ModelSummary):
    """The model in one line at the start of ``fit``, in place of Lightning's table.

    The line names the task and its model class and gives the total and trainable parameters and the size,
    e.g. ``Model: NeoBERTForSequenceClassification in SequenceClassificationTask, 2.0 M parameters (2.0 M
    trainable), 8.1 MB``. ``trainer.enable_model_summary: false`` turns it off.

    Args:
        enabled: Print the line; the command line sets it from trainer.enable_model_summary.
    """

    def __init__(self, enabled: bool | None = True) -> None:
        # Trainer's own enable_model_summary is None unless set, which means on.
        super().__init__(max_depth=0 if enabled is False else 1)
        self._task_name = "LightningModule"

    def on_fit_start(self, trainer, pl_module) -> None:
        # `summarize` only sees the summary's rows, which are the task's submodules.
        self._task_name = type(pl_module).__name__
        super().on_fit_start(trainer, pl_module)

    def summarize(
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int = 0,
        **summarize_kwargs,
    ) -> None:
        """Log the line: the types of the task's submodules that hold parameters (the model, not its metric
        collections), the parameter counts and the size in MB."""
        columns = dict(summary_data)
        with_parameters = [
            kind
            for kind, count in zip(columns.get("Type", []), columns.get("Params", []), strict=False)
            if count.strip() != "0"
        ]
        models = ", ".join(dict.fromkeys(with_parameters)) or "no submodules"
        total, trainable = (
            get_human_readable_count(int(count)).strip() for count in (total_parameters, trainable_parameters)
        )
        rank_zero_info(
            f"Model: {models} in {self._task_name}, {total} parameters ({trainable} trainable),"
            f" {model_size:.1f} MB"
        )


@contextlib.contextmanager
def _progress_bars_off(is_enabled: Callable[[], bool], disable: Callable, enable: Callable) -> Iterator[None]:
    """A library's progress bars off within the block and as they were after it."""
    was_enabled = is_enabled()
    if was_enabled:
        _quietly(disable)
    try:
        yield
    finally:
        if was_enabled:
            _quietly(enable)


def _quietly(toggle: Callable) -> None:
    # The libraries warn when an environment variable (HF_*_DISABLE_PROGRESS_BARS=0) forces their bars on and
    # leave them on: that is the user's choice, and the warning would repeat at every call.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        toggle()


def datasets_progress_bars_off() -> contextlib.AbstractContextManager[None]:
    """datasets' progress bars ("Generating train split") off within the block."""
    return _progress_bars_off(
        datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars
    )


@contextlib.contextmanager
def transformers_progress_bars_off() -> Iterator[None]:
    """transformers' progress bars ("Writing model shards") off within the block. transformers turns the
    Hugging Face hub's bars off and on with its own, so the hub's state is put back as well."""
    hub_was_disabled = hub_utils.are_progress_bars_disabled()
    try:
        with _progress_bars_off(
            transformers_logging.is_progress_bar_enabled,
            transformers_logging.disable_progress_bar,
            transformers_logging.enable_progress_bar,
        ):
            yield
    finally:
        if hub_was_disabled and not hub_utils.are_progress_bars_disabled():
            _quietly(hub_utils.disable_progress_bars)


@contextlib.contextmanager
def datasets_reader_errors_quiet() -> Iterator[None]:
    """datasets' file readers log "Failed to read file ..." before they raise; the error that `sources`
    raises from theirs names the file and the line, so the log line would only repeat it, less exactly."""
    reader_logger = logging.getLogger("datasets.packaged_modules")
    level = reader_logger.level
    reader_logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        reader_logger.setLevel(level)
