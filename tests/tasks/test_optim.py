"""Parameter groups, warmup/decay schedule and AdamW construction of ``neobert_tasks.tasks.optim``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from neobert_tasks.errors import ConfigError
from neobert_tasks.tasks.optim import (
    build_optimizer,
    check_optimizer_options,
    check_optimizer_settings,
    half_precision_weights_warning,
    parameter_groups,
    too_small_to_change,
    warmup_decay_schedule,
)

PEAK_LR = 2e-4


class SomethingRMSNorm(nn.Module):
    """RMSNorm-like module: only a 1-D gain, and a class name containing "Norm"."""

    def __init__(self, dim: int) -> None:
        """Create the gain.

        Args:
            dim: size of the normalised axis.
        """
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` by its root mean square (``x``: input with ``dim`` as last axis)."""
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class TinyNorm2d(nn.Module):
    """A norm whose gain is 2-D, so only its class name can exclude it from weight decay."""

    def __init__(self) -> None:
        """Create the 2-D gain."""
        super().__init__()
        self.scale = nn.Parameter(torch.ones(2, 3))


class PreNormBlock(nn.Module):
    """A container whose name contains "Norm" but whose linear weight must still be decayed."""

    def __init__(self) -> None:
        """Create the inner linear layer."""
        super().__init__()
        self.inner = nn.Linear(3, 3, bias=False)


class TinyModel(nn.Module):
    """Embedding, linear layers with and without bias, norms, a frozen weight."""

    def __init__(self) -> None:
        """Create the submodules."""
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.norm = SomethingRMSNorm(4)
        self.proj = nn.Linear(4, 3)
        self.layer_norm = nn.LayerNorm(3)
        self.norm2d = TinyNorm2d()
        self.block = PreNormBlock()
        self.frozen = nn.Linear(3, 3, bias=False)
        self.frozen.weight.requires_grad_(False)


def _ids(params) -> set[int]:
    """Return the identities of ``params`` (``params``: iterable of tensors)."""
    return {id(p) for p in params}


def test_parameter_groups_exclude_exactly_norms_and_biases() -> None:
    model = TinyModel()
    groups = parameter_groups(model, weight_decay=0.05)

    assert [g["name"] for g in groups] == ["decay", "no_decay"]
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.05
    assert no_decay["weight_decay"] == 0.0
    assert _ids(decay["params"]) == _ids([model.embed.weight, model.proj.weight, model.block.inner.weight])
    assert _ids(no_decay["params"]) == _ids(
        [
            model.proj.bias,
            model.norm.weight,
            model.layer_norm.weight,
            model.layer_norm.bias,
            model.norm2d.scale,
        ]
    )
    # The frozen weight is in neither group.
    assert id(model.frozen.weight) not in _ids(decay["params"]) | _ids(no_decay["params"])


def test_parameter_groups_list_tied_weights_once() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 10, bias=False))
    model[1].weight = model[0].weight
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert len(decay["params"]) == 1
    assert no_decay["params"] == []


def _scheduler(total_steps: int, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """Return a schedule over a one-parameter SGD optimiser with peak ``PEAK_LR``.

    Args:
        total_steps: passed to ``warmup_decay_schedule``.
        **kwargs: other ``warmup_decay_schedule`` arguments.
    """
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=PEAK_LR)
    return warmup_decay_schedule(optimizer, total_steps, **kwargs)


def _lrs(scheduler: torch.optim.lr_scheduler.LambdaLR, steps: int) -> list[float]:
    """Return the learning rate used at each of the first ``steps`` optimiser steps.

    Args:
        scheduler: the schedule, freshly built.
        steps: number of steps to record.
    """
    values = []
    for _ in range(steps):
        values.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    return values


def _linear_expected(step: int, total: int, warmup: int, final: float) -> float:
    """Reference formula of the linear schedule (arguments as in ``warmup_decay_schedule``).

    Args:
        step: optimiser step.
        total: total_steps.
        warmup: warmup steps.
        final: final_lr_fraction.
    """
    if step < warmup:
        return PEAK_LR * step / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return PEAK_LR * (1 - (1 - final) * progress)


def _cosine_expected(step: int, total: int, warmup: int, final: float) -> float:
    """Reference formula of the cosine schedule (arguments as in ``warmup_decay_schedule``).

    Args:
        step: optimiser step.
        total: total_steps.
        warmup: warmup steps.
        final: final_lr_fraction.
    """
    if step < warmup:
        return PEAK_LR * step / warmup
    progress = min(1.0, (step - warmup) / (total - warmup))
    return PEAK_LR * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress)))


@pytest.mark.parametrize(
    ("schedule", "formula"), [("linear", _linear_expected), ("cosine", _cosine_expected)]
)
def test_schedule_follows_formula(schedule: str, formula) -> None:
    total, final = 200, 0.1
    warmup = 12  # 0.06 * 200
    lrs = _lrs(_scheduler(total, schedule=schedule, final_lr_fraction=final), total + 20)

    assert lrs[0] == 0.0
    assert lrs[warmup // 2] == pytest.approx(PEAK_LR / 2)
    assert lrs[warmup] == pytest.approx(PEAK_LR)
    mid = warmup + (total - warmup) // 2
    assert lrs[mid] == pytest.approx(PEAK_LR * (1 + final) / 2)  # half way down for both shapes
    assert lrs[total] == pytest.approx(PEAK_LR * final)
    assert lrs[total + 19] == pytest.approx(PEAK_LR * final)  # stays at the floor afterwards
    for step in (1, 5, 11, 13, 50, 150, 199):
        assert lrs[step] == pytest.approx(formula(step, total, warmup, final)), step


def test_cosine_and_linear_differ_between_ends() -> None:
    quarter = 12 + (200 - 12) // 4
    linear = _lrs(_scheduler(200, schedule="linear"), quarter + 1)[quarter]
    cosine = _lrs(_scheduler(200, schedule="cosine"), quarter + 1)[quarter]
    assert cosine > linear


def test_warmup_steps_override_fraction() -> None:
    lrs = _lrs(_scheduler(100, warmup_fraction=0.5, warmup_steps=4, final_lr_fraction=0.0), 101)
    assert lrs[:5] == pytest.approx([0.0, PEAK_LR / 4, PEAK_LR / 2, 3 * PEAK_LR / 4, PEAK_LR])
    assert lrs[52] == pytest.approx(PEAK_LR / 2)
    assert lrs[100] == pytest.approx(0.0)


def test_warmup_fraction_is_rounded_not_ceiled() -> None:
    # 0.07 * 100 is 7.000000000000001 in floating point; the warmup is 7 steps, not 8.
    lrs = _lrs(_scheduler(100, warmup_fraction=0.07), 8)
    assert lrs[7] == pytest.approx(PEAK_LR)


def test_constant_schedule_holds_peak_after_warmup() -> None:
    lrs = _lrs(_scheduler(50, warmup_steps=5, schedule="constant"), 60)
    assert lrs[0] == 0.0
    assert lrs[5:] == pytest.approx([PEAK_LR] * 55)


def test_no_warmup_starts_at_peak() -> None:
    lrs = _lrs(_scheduler(10, warmup_steps=0, final_lr_fraction=0.5), 11)
    assert lrs[0] == pytest.approx(PEAK_LR)
    assert lrs[10] == pytest.approx(PEAK_LR / 2)


def test_warmup_longer_than_run_is_capped() -> None:
    with pytest.warns(UserWarning, match=r"warmup_steps 1000 is more than the run's 4 optimizer steps"):
        lrs = _lrs(_scheduler(4, warmup_steps=1000), 5)
    assert lrs == pytest.approx([0.0, PEAK_LR / 4, PEAK_LR / 2, 3 * PEAK_LR / 4, PEAK_LR])


def test_unknown_schedule_names_value_and_valid_names() -> None:
    with pytest.raises(ValueError, match=r"'polynomial'.*linear, cosine, constant"):
        _scheduler(10, schedule="polynomial")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"total_steps": 0},
        {"total_steps": float("inf")},
        {"total_steps": 10, "final_lr_fraction": 1.5},
        {"total_steps": 10, "warmup_fraction": -0.1},
        {"total_steps": 10, "warmup_steps": -1},
    ],
)
def test_schedule_rejects_bad_arguments(kwargs: dict) -> None:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=PEAK_LR)
    with pytest.raises(ValueError):
        warmup_decay_schedule(optimizer, **kwargs)


def test_build_optimizer_hyperparameters() -> None:
    model = TinyModel()
    optimizer = build_optimizer(model, learning_rate=3e-5, weight_decay=0.01, betas=(0.8, 0.98), eps=1e-6)

    assert type(optimizer) is torch.optim.AdamW
    assert [g["name"] for g in optimizer.param_groups] == ["decay", "no_decay"]
    for group in optimizer.param_groups:
        assert group["lr"] == 3e-5
        assert group["betas"] == (0.8, 0.98)
        assert group["eps"] == 1e-6
        assert group["fused"]  # CPU parameters: the fused CPU kernel
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.01, 0.0]
    expected = parameter_groups(model, 0.01)
    for group, reference in zip(optimizer.param_groups, expected, strict=True):
        assert _ids(group["params"]) == _ids(reference["params"])


def test_build_optimizer_defaults() -> None:
    optimizer = build_optimizer(TinyModel(), learning_rate=1e-4, weight_decay=0.1)
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.95)
    assert group["eps"] == 1e-8


def test_build_optimizer_passes_fused_through() -> None:
    optimizer = build_optimizer(TinyModel(), learning_rate=1e-4, weight_decay=0.1, fused=False)
    assert optimizer.param_groups[0]["fused"] is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_build_optimizer_fuses_on_cuda() -> None:
    optimizer = build_optimizer(TinyModel().cuda(), learning_rate=1e-4, weight_decay=0.1)
    assert optimizer.param_groups[0]["fused"] is True


def test_build_optimizer_rejects_a_frozen_model() -> None:
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        build_optimizer(frozen, learning_rate=1e-4, weight_decay=0.1)


def test_schedule_on_built_optimizer_scales_both_groups() -> None:
    optimizer = build_optimizer(TinyModel(), learning_rate=1e-3, weight_decay=0.1)
    scheduler = warmup_decay_schedule(optimizer, total_steps=10, warmup_steps=2)
    optimizer.step()
    scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([5e-4, 5e-4])


VALID_OPTIONS = dict(
    learning_rate=2e-5, weight_decay=0.0, betas=(0.9, 0.95), eps=0.0, warmup_fraction=0.0, warmup_steps=None,
    final_lr_fraction=1.0, lr_schedule="linear",
)  # fmt: skip


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("learning_rate", -1e-3, "learning_rate must be positive, got -0.001."),
        ("learning_rate", 0.0, "learning_rate must be positive, got 0.0."),
        ("learning_rate", math.nan, "learning_rate must be positive, got nan."),
        ("learning_rate", math.inf, "learning_rate must be positive, got inf."),
        ("weight_decay", -0.1, "weight_decay must be >= 0, got -0.1."),
        ("eps", -1e-8, "eps must be >= 0, got -1e-08."),
        ("betas", (0.9, 1.0), "betas[1] must be in [0, 1), got 1.0."),
        ("betas", (0.9,), "betas must be two numbers (β1, β2), got [0.9]."),
        ("warmup_fraction", 1.5, "warmup_fraction must be in [0, 1], got 1.5."),
        ("warmup_steps", -1, "warmup_steps must be >= 0, got -1."),
        ("final_lr_fraction", -0.1, "final_lr_fraction must be in [0, 1], got -0.1."),
        ("lr_schedule", "step", "lr_schedule 'step' is not one of linear, cosine, constant."),
    ],
)
def test_out_of_range_optimiser_options_name_the_key(option, value, message):
    with pytest.raises(ConfigError) as error:
        check_optimizer_options("model.init_args.", **{**VALID_OPTIONS, option: value})
    assert str(error.value) == f"model.init_args.{message}"


def test_boundary_optimiser_options_are_accepted():
    check_optimizer_options("", **VALID_OPTIONS)  # zero decay, eps, warmup; no decay of the rate
    check_optimizer_options("", **{**VALID_OPTIONS, "warmup_fraction": 1.0, "warmup_steps": 0})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("update", [2e-5, 1e-4])
def test_too_small_to_change_is_where_half_precision_rounds_the_update_away(dtype, update):
    weight = (torch.randn(20000, generator=torch.Generator().manual_seed(0)) * 0.02).to(dtype)
    unchanged = ((weight.float() + update).to(dtype) == weight) & (weight != 0)  # as fused AdamW rounds
    predicted = too_small_to_change(weight, update)
    # Only sums that land exactly halfway between two values differ (rounded to the even one).
    assert int((predicted != unchanged).sum()) <= 0.002 * weight.numel()
    if dtype == torch.bfloat16:  # fp16 keeps 3 more bits: fewer updates are lost
        assert 0.05 < float(predicted.float().mean()) < 0.95


def test_half_precision_weights_are_warned_about_at_fine_tuning_rates():
    layer = torch.nn.Linear(256, 256)
    torch.nn.init.normal_(layer.weight, std=0.02, generator=torch.Generator().manual_seed(0))
    assert half_precision_weights_warning(layer, 2e-5, "32-true") is None  # fp32 weights
    message = half_precision_weights_warning(layer.bfloat16(), 2e-5, "bf16-true")
    assert message.startswith(
        "trainer.precision bf16-true trains bfloat16 weights, and a step of learning_rate 2e-05 rounds away"
    )
    share = int(message.split("rounds away on ")[1].split("%")[0])
    assert 60 <= share <= 80  # about 70% of N(0, 0.02) weights are above 2^9 × 2e-5
    assert half_precision_weights_warning(layer, 1e-3, "bf16-true") is None  # large enough steps


def test_an_optimizers_own_rate_and_decay_are_refused_not_ignored() -> None:
    """The groups' rate and decay won: SGD's lr 0.5 was recorded in config.yaml and trained at 1e-3."""
    sgd = {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.001, "momentum": 0.9, "weight_decay": 0.0}}
    check_optimizer_settings(sgd, "model.init_args.")  # defaults and other options: fine
    check_optimizer_settings(None, "model.init_args.")
    with pytest.raises(ConfigError, match=r"^model.init_args.optimizer.init_args.lr \(0.5\) would not"):
        check_optimizer_settings({**sgd, "init_args": {**sgd["init_args"], "lr": 0.5}}, "model.init_args.")
    with pytest.raises(ConfigError, match=r"takes model.init_args.weight_decay; set that instead"):
        check_optimizer_settings({**sgd, "init_args": {"weight_decay": 0.1}}, "model.init_args.")
