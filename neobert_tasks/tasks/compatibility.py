"""Checks that a model, its data and a checkpoint fit together, each failing with one sentence.

They run before any step, where a mismatch would otherwise surface as an index error deep in the
embedding, an input the model refuses halfway through an epoch, or a wall of ``size mismatch`` lines from
``load_state_dict``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from neobert_tasks.errors import ConfigError


def model_source(pretrained: str | None, model_config: dict[str, Any] | None) -> str:
    """How the model was built, for messages: its checkpoint, or its random initialisation."""
    if model_config is not None or pretrained is None:
        return "the model of model.init_args.model_config"
    return f"the model '{pretrained}'"


def check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: str) -> None:
    """Refuse a tokenizer whose ids fall outside the model's embedding table."""
    vocab_size = model.config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ConfigError(
            f"The tokenizer '{tokenizer.name_or_path}' has {len(tokenizer)} tokens but {source} has a"
            f" vocabulary of {vocab_size}; use the model's own tokenizer, or set model_config.vocab_size for"
            " a model trained from scratch."
        )


def check_max_length_fits(model: PreTrainedModel, max_length: int | None, source: str) -> None:
    """Refuse inputs longer than the model accepts (``config.max_length``, its max_position_embeddings)."""
    model_max_length = getattr(model.config, "max_length", None)
    if max_length is not None and model_max_length is not None and max_length > model_max_length:
        raise ConfigError(
            f"data.init_args.max_length ({max_length}) exceeds the model's max_length ({model_max_length}),"
            f" the longest input {source} takes; set data.init_args.max_length to {model_max_length} or less."
        )


def check_checkpoint_fits(
    module: torch.nn.Module, checkpoint: dict[str, Any], path: str | None, num_labels: int | None
) -> None:
    """Refuse a Lightning checkpoint whose weights have other shapes than the module's, before loading it.

    The usual cause is a checkpoint trained on data with another number of labels; ``num_labels`` is the
    module's (linked from the data), compared with the one saved in the checkpoint's hyperparameters.
    """
    saved = checkpoint.get("state_dict", {})
    current = module.state_dict()
    mismatched = [
        (name, list(saved[name].shape), list(current[name].shape))
        for name in saved
        if name in current and tuple(saved[name].shape) != tuple(current[name].shape)
    ]
    if not mismatched:
        return
    where = f"Checkpoint '{path}'" if path else "The checkpoint"
    saved_labels = checkpoint.get("hyper_parameters", {}).get("num_labels")
    if saved_labels is not None and num_labels is not None and saved_labels != num_labels:
        raise ConfigError(
            f"{where} was trained with num_labels {saved_labels} but the data has {num_labels} labels; use a"
            " checkpoint of this task, or start a new fit from that run's export with"
            " --model.init_args.pretrained <run>/export (its classifier is then re-initialised)."
        )
    name, saved_shape, current_shape = mismatched[0]
    raise ConfigError(
        f"{where} does not fit the model: '{name}' has shape {saved_shape} there but {current_shape} here"
        f" ({len(mismatched)} weights differ)."
    )


def check_checkpoint_labels(checkpoint: dict[str, Any], path: str | None, label_names: Any) -> None:
    """Refuse a checkpoint trained with other label names (or another order of them) than the data's: its
    class ids would be read as other labels, and scores and predictions would be silently wrong."""
    saved = checkpoint.get("hyper_parameters", {}).get("label_names")
    if saved is None or label_names is None or list(saved) == list(label_names):
        return
    where = f"Checkpoint '{path}'" if path else "The checkpoint"
    advice = (
        "set data.init_args.label_names to the checkpoint's, in its order"
        if sorted(saved) == sorted(label_names)
        else "use a checkpoint trained on these labels, or data with the checkpoint's"
    )
    raise ConfigError(
        f"{where} was trained with label_names {list(saved)} but the data's are {list(label_names)}, so its"
        f" class ids would name other labels; {advice}."
    )


def warn_if_schedule_changed(checkpoint: dict[str, Any] | None, total_steps: float, path: str | None) -> None:
    """Warn when a resumed fit lays its learning-rate schedule out over other steps than the run that wrote
    ``checkpoint`` did (``schedule_total_steps``, saved by the task): the rate jumps and warmup and decay
    end elsewhere. Nothing when the checkpoint is already past the new end (nothing is trained)."""
    planned = (checkpoint or {}).get("schedule_total_steps")
    if planned is None or not math.isfinite(total_steps) or int(total_steps) == planned:
        return
    step = checkpoint.get("global_step", 0)
    if step >= total_steps:
        return
    rank_zero_warn(
        f"The learning-rate schedule now spans {int(total_steps)} optimizer steps where the run of checkpoint"
        f" '{path}' planned {planned} (trainer.max_epochs, trainer.max_steps, the batching or the number of"
        f" processes changed): from step {step} the rate follows the new plan, not the interrupted run's."
    )


# What a resumed fit takes from its options rather than from the checkpoint's optimizer state.
OPTIMIZER_SETTINGS = ("weight_decay", "betas", "eps")


def optimizer_settings(optimizer: torch.optim.Optimizer, scheduler: Any) -> list[dict[str, Any]]:
    """Per parameter group, the peak learning rate (the scheduler's base) and `OPTIMIZER_SETTINGS` as this
    command's options made them, before a checkpoint's optimizer state replaces them."""
    return [
        {"base_lr": base_lr, **{key: group[key] for key in OPTIMIZER_SETTINGS if key in group}}
        for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs, strict=True)
    ]


def apply_changed_settings(
    optimizer: torch.optim.Optimizer, scheduler: Any, configured: list[dict[str, Any]], step: int
) -> list[str]:
    """Put back the options a resumed fit was given where they differ from the checkpoint's: Lightning
    restores the saved parameter groups and schedule, so a learning rate or weight decay changed for the
    resume was silently not used, while config.yaml recorded it. The schedule keeps its place (the rate's
    fraction of its peak). Returns the names of the settings changed."""
    if len(configured) != len(optimizer.param_groups):
        return []
    changed = []
    for index, (group, settings) in enumerate(zip(optimizer.param_groups, configured, strict=True)):
        saved_base, base = scheduler.base_lrs[index], settings["base_lr"]
        if not math.isclose(saved_base, base, rel_tol=1e-9):
            fraction = group["lr"] / saved_base if saved_base else 1.0
            group["lr"], group["initial_lr"], scheduler.base_lrs[index] = base * fraction, base, base
            changed.append("learning_rate")
        for key in OPTIMIZER_SETTINGS:
            if key in settings and tuple(as_list(group.get(key))) != tuple(as_list(settings[key])):
                group[key] = settings[key]
                changed.append(key)
    names = sorted(set(changed))
    if names:
        rank_zero_info(f"Resumed at step {step} with a changed {', '.join(names)}: the new value applies.")
    return names


def as_list(value: Any) -> list:
    """A setting as a list, for comparing a tuple (betas) with a scalar-or-list of the restored state."""
    return list(value) if isinstance(value, (list, tuple)) else [value]
