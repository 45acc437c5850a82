"""Lightning's refusals of ``trainer.*`` settings, reworded as one sentence naming the keys to change.

Lightning checks the hardware settings (accelerator, devices, strategy, num_nodes, precision) when the
Trainer is built, and others (``val_check_interval`` against the number of batches) when ``fit`` starts.
It refuses with a MisconfigurationException, ValueError or TypeError worded for the Python API
(``Trainer(devices='0')``), shown with a traceback. A few counts it does not check at all and divides by
(``accumulate_grad_batches: 0`` ended in a ZeroDivisionError); those are checked here before anything is
built. The commonest refusal gets its own sentence: a GPU accelerator (the ``ddp`` and ``fsdp`` presets
ask for one) where PyTorch finds no GPU, often because the CPU build of torch was installed. An
EarlyStopping callback's monitor that no validation logs, a RuntimeError, is named too.
"""

from __future__ import annotations

import inspect
import re
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from neobert_tasks.errors import ConfigError

TRAINER_ARGUMENTS = frozenset(inspect.signature(lightning.pytorch.Trainer.__init__).parameters) - {"self"}
# The Trainer arguments that choose the hardware, in the order a user reads them.
HARDWARE_KEYS = ("accelerator", "devices", "strategy", "num_nodes", "precision")
GPU_ACCELERATORS = ("gpu", "cuda")
# Trainer arguments Lightning divides by without checking them first, and what they may be.
UNCHECKED_COUNTS = {
    "accumulate_grad_batches": "a positive integer",
    "check_val_every_n_epoch": "a positive integer (or null: validate by val_check_interval alone)",
    "val_check_interval": "a fraction of an epoch in (0, 1] or a positive number of batches",
}
# Trainer arguments Lightning takes unchecked where a negative value means nothing (and does nothing).
UNCHECKED_MAGNITUDES = {"gradient_clip_val": "a non-negative number (0 or null: no clipping)"}
# EarlyStopping's RuntimeError for a monitor no validation logged, with the metrics that were logged.
EARLY_STOPPING_REFUSAL = re.compile(
    r"Early stopping conditioned on metric `([^`]*)` which is not available\..*: (.*)$"
)
LIGHTNING_DIRECTORY = Path(lightning.__file__).resolve().parent


def check_trainer_counts(trainer: Mapping[str, Any]) -> None:
    """Refuse the counts that Lightning takes unchecked and later divides by, naming the key."""
    for key, allowed in UNCHECKED_COUNTS.items():
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"trainer.{key} must be {allowed}, got {value}.")
    for key, allowed in UNCHECKED_MAGNITUDES.items():
        value = trainer.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"trainer.{key} must be {allowed}, got {value}.")


def raised_by_lightning(error: BaseException) -> bool:
    """Whether the innermost frame of ``error``'s traceback is in Lightning's own code: a ValueError from
    there is a refusal of the settings, one from anywhere else may be a bug, which keeps its traceback."""
    frames = traceback.extract_tb(error.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(LIGHTNING_DIRECTORY)


def named_arguments(message: str) -> list[str]:
    """The Trainer arguments a Lightning message names: in backquotes, as ``Trainer(name=…)``, or bare when
    the name has an underscore (``limit_val_batches``; a bare "strategy" is just a word)."""
    names = re.findall(r"`(\w+)[=`]|Trainer\((\w+)=|\b(\w+_\w+)\b", message)
    found = [name for match in names for name in match if name in TRAINER_ARGUMENTS]
    if "Timer(duration=" in message:  # the Timer callback that trainer.max_time becomes
        found.append("max_time")
    return list(dict.fromkeys(found))


def as_key(name: str, value: str | None = None) -> str | None:
    """``trainer.name value`` for a Trainer argument, None for any other name."""
    if name not in TRAINER_ARGUMENTS:
        return None
    return f"trainer.{name}" + (f" {value}" if value else "")


def reworded(message: str) -> str:
    """Lightning's message with the Python API's argument names written as config keys."""
    message = re.sub(r"`(\w+)` argument of `Trainer`", r"trainer.\1", message)
    message = re.sub(r"`Timer\(duration=([^)]*)\)`", r"trainer.max_time \1", message)
    message = re.sub(r"`?Trainer\((\w+)=([^)]*)\)`?", r"trainer.\1 \2", message)
    message = re.sub(r"`(\w+)(?:=([^`]*))?`", lambda match: as_key(match[1], match[2]) or match[0], message)
    return re.sub(r"(?<![.\w])(\w+_\w+)\b", lambda match: as_key(match[1]) or match[0], message)


def setting_text(value: Any) -> str:
    """A setting as the user wrote it: strings quoted, a strategy object by its class name."""
    if value is None or isinstance(value, (str, int, float, list)):
        return repr(value)
    class_path = getattr(value, "class_path", None)  # a strategy given as class_path (a preset's FSDP)
    if class_path is None and isinstance(value, Mapping):
        class_path = value.get("class_path")
    return str(class_path).rsplit(".", 1)[-1] if class_path else type(value).__name__


def no_gpu_reason() -> str:
    """Why PyTorch finds no CUDA GPU: a CPU-only build of torch, or no device visible to a CUDA build."""
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU-only build (install the CUDA build of torch that matches"
            " the driver)"
        )
    return f"torch {torch.__version__} sees no CUDA device (check the driver and CUDA_VISIBLE_DEVICES)"


def trainer_settings_refusal(error: BaseException, trainer: Mapping[str, Any] | None) -> str | None:
    """The sentence for Lightning's refusal ``error`` of the ``trainer`` settings, or None when ``error`` is
    not one. ``trainer`` is None once the Trainer is built: the refusal must then name a Trainer argument,
    and Lightning's message gives its value."""
    message = " ".join(str(error).split())
    stopping = EARLY_STOPPING_REFUSAL.match(message) if isinstance(error, RuntimeError) else None
    if stopping and raised_by_lightning(error):
        return (
            f"trainer.callbacks: EarlyStopping's monitor '{stopping[1]}' is not a metric this run logs;"
            f" monitor one of {stopping[2].replace('`', '')}."
        )
    if not isinstance(error, (MisconfigurationException, ValueError, TypeError)) or not (
        isinstance(error, MisconfigurationException) or raised_by_lightning(error)
    ):
        return None
    named = named_arguments(message)
    if trainer is None:
        return f"Lightning cannot run trainer settings: {reworded(message).rstrip('.')}." if named else None
    strategy = setting_text(trainer.get("strategy"))
    if "fsdp" in strategy.lower() and not torch.cuda.is_available():  # whatever the accelerator asked for
        return (
            f"trainer.strategy {strategy} shards the model over CUDA GPUs, and PyTorch finds none here:"
            f" {no_gpu_reason()}; drop it: on the CPU, train in one process or with"
            " configs/presets/ddp_cpu.yaml."
        )
    accelerator = trainer.get("accelerator")
    if isinstance(accelerator, str) and accelerator in GPU_ACCELERATORS and not torch.cuda.is_available():
        return (
            f"trainer.accelerator is {accelerator!r} but PyTorch finds no GPU here: {no_gpu_reason()}; set"
            " --trainer.accelerator cpu, or auto to use a GPU where there is one."
        )
    keys = [name for name in named if name not in HARDWARE_KEYS] or HARDWARE_KEYS
    settings = ", ".join(f"trainer.{key} {setting_text(trainer.get(key))}" for key in keys)
    return f"Lightning cannot run the trainer settings {settings}: {reworded(message).rstrip('.')}."
