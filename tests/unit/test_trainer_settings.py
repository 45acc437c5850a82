"""Which errors count as Lightning refusing the trainer's settings, and how they are worded."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.demos.boring_classes import BoringModel

from neobert_tasks.errors import ConfigError
from neobert_tasks.trainer_settings import check_trainer_counts, setting_text, trainer_settings_refusal

CPU = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1, "precision": "32-true"}


def refusal_of(**settings) -> str | None:
    try:
        L.Trainer(**settings, logger=False, enable_checkpointing=False)
    except Exception as error:  # what the command line catches
        return trainer_settings_refusal(error, settings)
    raise AssertionError(f"Lightning accepted {settings}")


def test_lightning_refusal_names_every_hardware_setting_and_the_reason():
    message = refusal_of(**{**CPU, "devices": 0})
    assert message == (
        "Lightning cannot run the trainer settings trainer.accelerator 'cpu', trainer.devices 0,"
        " trainer.strategy 'auto', trainer.num_nodes 1, trainer.precision '32-true': trainer.devices 0 value"
        " is not a valid input using cpu accelerator."
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message for a machine without a GPU")
@pytest.mark.parametrize("accelerator", ["cpu", "gpu"])
def test_fsdp_without_a_gpu_says_it_needs_cuda_whatever_the_accelerator(accelerator):
    """With the cpu preset after the fsdp one, the refusal said to set the accelerator to cpu, which it was;
    with the fsdp preset alone, doing what it said gave a second refusal."""
    message = refusal_of(**{**CPU, "accelerator": accelerator, "strategy": "fsdp"})
    assert message.startswith(
        "trainer.strategy 'fsdp' shards the model over CUDA GPUs, and PyTorch finds none"
    )
    assert message.endswith("drop it: on the CPU, train in one process or with configs/presets/ddp_cpu.yaml.")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message for a machine without a GPU")
def test_gpu_accelerator_without_a_gpu_gets_the_reason_not_lightnings_words():
    message = refusal_of(**{**CPU, "accelerator": "gpu"})
    assert message.startswith("trainer.accelerator is 'gpu' but PyTorch finds no GPU here: torch ")
    assert "No supported gpu backend" not in message


def test_errors_raised_outside_lightning_keep_their_traceback():
    """A ValueError from our own code (or any library but Lightning) may be a bug: not reworded."""
    try:
        raise ValueError("a bug of ours")
    except ValueError as error:
        assert trainer_settings_refusal(error, CPU) is None
    assert trainer_settings_refusal(KeyError("devices"), CPU) is None


def test_a_refusal_of_other_settings_names_those_keys_only():
    message = refusal_of(**CPU, max_epochs=-5)
    assert message == (
        "Lightning cannot run the trainer settings trainer.max_epochs -5: trainer.max_epochs must be a"
        " non-negative integer or -1. You passed in -5."
    )


def test_a_refused_max_time_is_named_as_such():
    """Lightning refuses it as the Timer callback it becomes; the hardware keys used to be named instead."""
    message = refusal_of(**CPU, max_time="5s")
    assert message.startswith(
        "Lightning cannot run the trainer settings trainer.max_time '5s': trainer.max_time"
    )


def test_once_the_trainer_is_built_a_refusal_must_name_a_trainer_argument():
    """Refusals raised while ``fit`` runs come without the config: Lightning's message gives the values."""
    try:
        trainer = L.Trainer(**CPU, logger=False, val_check_interval=1000)
        trainer.fit(BoringModel())
    except ValueError as error:
        message = trainer_settings_refusal(error, None)
    assert message.startswith(
        "Lightning cannot run trainer settings: trainer.val_check_interval (1000) must be"
    )
    assert "set trainer.limit_val_batches to 0.0 instead" in message
    unnamed = MisconfigurationException("`configure_optimizers` returned nothing usable")
    assert trainer_settings_refusal(unnamed, None) is None


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("accumulate_grad_batches", 0, "a positive integer"),
        ("check_val_every_n_epoch", 0, "a positive integer (or null: validate by val_check_interval alone)"),
        ("val_check_interval", 0.0, "a fraction of an epoch in (0, 1] or a positive number of batches"),
    ],
)
def test_counts_lightning_divides_by_unchecked_are_refused_first(key, value, allowed):
    """Lightning itself ended these in a ZeroDivisionError."""
    with pytest.raises(ConfigError) as refusal:
        check_trainer_counts({**CPU, key: value})
    assert str(refusal.value) == f"trainer.{key} must be {allowed}, got {value}."
    check_trainer_counts({**CPU, key: None if key != "accumulate_grad_batches" else 1})


def test_a_negative_gradient_clip_val_is_refused_and_zero_is_no_clipping():
    """Lightning took -1 without a word and clipped nothing."""
    with pytest.raises(ConfigError, match=r"^trainer.gradient_clip_val must be a non-negative number"):
        check_trainer_counts({**CPU, "gradient_clip_val": -1.0})
    for value in (0, 0.0, 1.0, None):
        check_trainer_counts({**CPU, "gradient_clip_val": value})


def test_a_strategy_given_by_class_path_is_named_by_its_class():
    """configs/presets/fsdp.yaml gives the strategy as a class_path: the refusal said 'strategy Namespace'."""
    from jsonargparse import Namespace  # noqa: PLC0415

    assert setting_text(Namespace(class_path="lightning.pytorch.strategies.FSDPStrategy")) == "FSDPStrategy"
    assert setting_text({"class_path": "lightning.pytorch.strategies.DDPStrategy"}) == "DDPStrategy"
    assert setting_text("ddp") == "'ddp'" and setting_text(None) == "None"
