"""Optimiser and learning-rate schedule shared by every fine-tuning task.

The LightningModules call these from ``configure_optimizers``: :func:`build_optimizer` for AdamW with
weight decay on matrices only, and :func:`warmup_decay_schedule` with
``self.trainer.estimated_stepping_batches`` as ``total_steps``, stepped every optimiser step.
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn

from neobert_tasks.errors import ConfigError
from neobert_tasks.tasks.layers import layer_index, layer_scales

SCHEDULES = ("linear", "cosine", "constant")
"""Valid values of ``warmup_decay_schedule``'s ``schedule`` argument."""


def parameter_groups(
    model: torch.nn.Module, weight_decay: float, layer_decay: float | None = None, num_layers: int = 0
) -> list[dict]:
    """Split the trainable parameters into a weight-decayed group and one without decay, per layer when
    ``layer_decay`` is set.

    Decaying biases and normalisation gains only pulls them towards 0 (towards a dead layer, for a gain)
    without regularising anything, so they are excluded: every parameter with fewer than 2 dimensions,
    and the direct parameters of any module whose class name contains ``"Norm"`` (LayerNorm, RMSNorm,
    ...). Embedding and linear weight matrices are decayed. Frozen parameters are left out.

    Args:
        model: the module whose parameters are optimised.
        weight_decay: decoupled weight decay of the ``"decay"`` group.
        layer_decay: learning-rate decay per layer below the head (see `neobert_tasks.tasks.layers`);
            None for one rate everywhere.
        num_layers: the model's number of transformer blocks (with ``layer_decay``).

    Returns:
        ``[{"name": "decay", "params": [...], "weight_decay": weight_decay, "lr_scale": 1.0},
        {"name": "no_decay", "params": [...], "weight_decay": 0.0, "lr_scale": 1.0}]``, either list
        possibly empty; with ``layer_decay``, such a pair per layer (``layer_<i>_decay``, …, empty ones
        left out), ``lr_scale`` being the layer's multiplier of the peak rate.
    """
    # Only a norm module's own parameters: a container whose name merely contains "Norm" (say a
    # "PreNormBlock") must not take its linear layers out of weight decay.
    norm_params = {
        id(p)
        for module in model.modules()
        if "Norm" in type(module).__name__
        for p in module.parameters(recurse=False)
    }
    scales = layer_scales(layer_decay, num_layers)
    groups: dict[tuple[int, bool], list] = {}
    # named_parameters() lists a tied parameter once, so it never lands in two groups.
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_index(name, num_layers) if layer_decay is not None else 0
        decayed = not (param.ndim < 2 or id(param) in norm_params)
        groups.setdefault((layer, decayed), []).append(param)
    keys = [(0, True), (0, False)] if layer_decay is None else sorted(groups, key=lambda k: (k[0], not k[1]))
    return [
        {
            "name": ("" if layer_decay is None else f"layer_{layer}_") + ("decay" if decayed else "no_decay"),
            "params": groups.get((layer, decayed), []),
            "weight_decay": weight_decay if decayed else 0.0,
            "lr_scale": scales[layer],
        }
        for layer, decayed in keys
    ]


def warmup_decay_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int | float,
    warmup_fraction: float = 0.06,
    warmup_steps: int | None = None,
    final_lr_fraction: float = 0.1,
    schedule: str = "linear",
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from 0 to each group's peak rate, then decay, as a step-wise ``LambdaLR``.

    After warmup the rate decays linearly (``"linear"``) or along a half cosine (``"cosine"``) to
    ``final_lr_fraction`` times the peak at ``total_steps`` and stays there; ``"constant"`` keeps the
    peak. The peak is the ``lr`` of each parameter group, so it must be stepped once per optimiser step
    (Lightning: ``"interval": "step"``).

    Args:
        optimizer: optimiser whose groups' ``lr`` are the peak rates.
        total_steps: number of optimiser steps of the run (``trainer.estimated_stepping_batches``).
        warmup_fraction: warmup length as a fraction of ``total_steps`` (rounded to whole steps).
        warmup_steps: warmup length in steps; overrides ``warmup_fraction`` when given.
        final_lr_fraction: fraction of the peak reached at ``total_steps``, in [0, 1].
        schedule: ``"linear"``, ``"cosine"`` or ``"constant"``.

    Returns:
        The scheduler; its multiplier at step 0 is 0 unless there is no warmup.

    Raises:
        ValueError: for an unknown schedule, a non-finite or non-positive ``total_steps``, or a fraction
            outside [0, 1].
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"Unknown schedule {schedule!r}; valid schedules are: {', '.join(SCHEDULES)}.")
    # Lightning reports an infinite estimated_stepping_batches when neither max_steps nor max_epochs
    # bounds the run; a decay schedule cannot be laid out over that.
    if not math.isfinite(total_steps) or total_steps < 1:
        raise ConfigError(
            f"total_steps must be a finite number >= 1, got {total_steps}; set max_steps or max_epochs."
        )
    total_steps = int(total_steps)
    if not 0.0 <= final_lr_fraction <= 1.0:
        raise ConfigError(f"final_lr_fraction must be in [0, 1], got {final_lr_fraction}.")
    if warmup_steps is None:
        if not 0.0 <= warmup_fraction <= 1.0:
            raise ConfigError(f"warmup_fraction must be in [0, 1], got {warmup_fraction}.")
        # round(), not ceil(): 0.07 * 100 is 7.000000000000001 in floating point.
        warmup_steps = round(warmup_fraction * total_steps)
    elif warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    # Capped rather than rejected so that short debugging runs (fast_dev_run, limit_train_batches) work
    # with the warmup of the full configuration.
    warmup = min(int(warmup_steps), total_steps)
    if int(warmup_steps) > total_steps:
        rank_zero_warn(
            f"model.init_args.warmup_steps {warmup_steps} is more than the run's {total_steps} optimizer"
            " steps: warmup is cut to them, so the learning rate rises for the whole run and never decays."
        )

    def lr_lambda(step: int) -> float:
        """The multiplier of the peak rate at optimiser step ``step`` (0 for the first)."""
        if step < warmup:
            return step / warmup
        if schedule == "constant":
            return 1.0
        # Clamped so that steps past total_steps (a resumed or extended run) stay at the final fraction.
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if schedule == "linear":
            return 1.0 - (1.0 - final_lr_fraction) * progress
        return final_lr_fraction + (1.0 - final_lr_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


def check_optimizer_options(
    prefix: str,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    warmup_fraction: float,
    warmup_steps: int | None,
    final_lr_fraction: float,
    lr_schedule: str,
) -> None:
    """Refuse out-of-range optimiser and schedule options with one sentence naming the key (``prefix`` +
    name), when the task is built: torch would refuse some only at the first ``fit`` step, as a traceback,
    and accept others (a negative warmup) silently."""
    ranges = [
        ("learning_rate", learning_rate, learning_rate > 0, "positive"),
        ("weight_decay", weight_decay, weight_decay >= 0, ">= 0"),
        ("eps", eps, eps >= 0, ">= 0"),
        ("warmup_fraction", warmup_fraction, 0 <= warmup_fraction <= 1, "in [0, 1]"),
        ("warmup_steps", warmup_steps, warmup_steps is None or warmup_steps >= 0, ">= 0"),
        ("final_lr_fraction", final_lr_fraction, 0 <= final_lr_fraction <= 1, "in [0, 1]"),
    ]
    if len(betas) != 2:
        raise ConfigError(f"{prefix}betas must be two numbers (β1, β2), got {list(betas)}.")
    ranges += [(f"betas[{index}]", beta, 0 <= beta < 1, "in [0, 1)") for index, beta in enumerate(betas)]
    for name, value, valid, expected in ranges:
        # `valid` is False for NaN too; infinity is refused separately since inf > 0.
        if not valid or (value is not None and not math.isfinite(value)):
            raise ConfigError(f"{prefix}{name} must be {expected}, got {value}.")
    if lr_schedule not in SCHEDULES:
        raise ConfigError(f"{prefix}lr_schedule {lr_schedule!r} is not one of {', '.join(SCHEDULES)}.")


# Options of a user's optimiser that every parameter group sets again, from the task's own options.
GROUP_OPTIONS = {"lr": "learning_rate", "weight_decay": "weight_decay"}


def check_optimizer_settings(optimizer: dict[str, Any] | None, prefix: str) -> None:
    """Refuse an optimiser's ``lr`` or ``weight_decay`` set away from its default: the parameter groups carry
    the task's ``learning_rate`` (with the schedule and layer decay) and ``weight_decay``, which win, so the
    value would be recorded in config.yaml but never used. ``optimizer`` is the config's class_path dict."""
    if not optimizer or not isinstance(optimizer, dict) or "class_path" not in optimizer:
        return
    module, _, name = str(optimizer["class_path"]).rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return  # jsonargparse has refused a class it cannot import before this runs
    for option, task_option in GROUP_OPTIONS.items():
        value = (optimizer.get("init_args") or {}).get(option)
        default = parameters[option].default if option in parameters else inspect.Parameter.empty
        if value is not None and default is not inspect.Parameter.empty and value != default:
            raise ConfigError(
                f"{prefix}optimizer.init_args.{option} ({value}) would not be used: every parameter group"
                f" takes {prefix}{task_option}; set that instead."
            )


def build_optimizer(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    optimizer_factory: Callable[[list[dict]], torch.optim.Optimizer] | None = None,
    fused: bool | None = None,
    layer_decay: float | None = None,
    num_layers: int = 0,
) -> torch.optim.Optimizer:
    """Build AdamW, or the optimiser ``optimizer_factory`` makes, over :func:`parameter_groups` of ``model``.

    Args:
        model: the module to optimise (its trainable parameters).
        learning_rate: peak learning rate, times each group's ``lr_scale``.
        weight_decay: decoupled weight decay of the decayed groups (the others get 0).
        betas: AdamW's ``(beta1, beta2)`` (the default optimiser only).
        eps: AdamW's epsilon (the default optimiser only).
        optimizer_factory: builds another optimiser from the groups (LightningCLI's ``OptimizerCallable``,
            a ``class_path`` with ``init_args``); each group's ``lr`` and ``weight_decay`` win over its own.
        fused: use the fused AdamW kernel; None picks it when every trainable parameter is on CUDA or
            on the CPU (one kernel per step instead of a loop over tensors: much faster steps on CPU
            for small models, see bench/README.md).
        layer_decay: layer-wise learning-rate decay (see :func:`parameter_groups`); None for none.
        num_layers: the model's number of transformer blocks (with ``layer_decay``).

    Raises:
        ConfigError: for a model without trainable parameters.
    """
    groups = parameter_groups(model, weight_decay, layer_decay, num_layers)
    groups = [{**group, "lr": learning_rate * group["lr_scale"]} for group in groups if group["params"]]
    params = [p for group in groups for p in group["params"]]
    if not params:
        raise ConfigError("The model has no trainable parameters to optimise.")
    if optimizer_factory is not None:
        return optimizer_factory(groups)
    if fused is None and all(p.device.type in ("cuda", "cpu") for p in params):
        fused = True
    # fused=None is passed through untouched so that torch keeps choosing its default implementation.
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=fused)


# Significant bits below the leading one, per half-precision weight dtype (bf16 keeps 7, fp16 10).
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10}


def half_precision_weights_warning(
    model: torch.nn.Module, learning_rate: float, precision: str
) -> str | None:
    """What to say when the trainable weights themselves are bf16 or fp16 (``trainer.precision: bf16-true``).

    An optimiser step adds roughly ``learning_rate`` to a weight (Adam normalises the gradient), and a sum
    rounds back to the weight unless it reaches half a unit of its last place: for a bf16 weight of 0.02 that
    is 3e-5, above the 2e-5 of NeoBERT's fine-tuning recipe. Lightning converts the weights without a word;
    ``bf16-mixed`` keeps fp32 weights and computes in bf16. None when the weights are fp32, or when the
    steps change nearly all of them.
    """
    weights = [p for p in model.parameters() if p.requires_grad and p.dtype in MANTISSA_BITS]
    if not weights:
        return None
    frozen = sum(int(too_small_to_change(p.detach(), learning_rate).sum()) for p in weights)
    share = frozen / sum(p.numel() for p in weights)
    if share < 0.01:
        return None
    return (
        f"trainer.precision {precision} trains {str(weights[0].dtype).removeprefix('torch.')} weights, and a"
        f" step of learning_rate {learning_rate:g} rounds away on {share:.0%} of them: use bf16-mixed (fp32"
        " weights, bf16 compute) unless memory forces this, or a larger learning rate."
    )


def too_small_to_change(weight: torch.Tensor, update: float) -> torch.Tensor:
    """Where adding ``update`` to the half-precision ``weight`` gives the weight back (zeros excepted)."""
    # |w| = m · 2^E with m in [0.5, 1): half a unit in the last place is 2^(E - 2 - mantissa bits).
    exponent = torch.frexp(weight.float())[1]
    half_unit = torch.exp2((exponent - 2 - MANTISSA_BITS[weight.dtype]).float())
    return (weight != 0) & (half_unit > update)
