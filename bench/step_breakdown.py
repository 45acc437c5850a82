"""Where the time of a training step goes, phase by phase: neobert_tasks ``fit`` against the ``Trainer``.

    python -m bench.step_breakdown                       # the tiny SST-2 recipe: 4 × 128, fp32, batch 32
    python -m bench.step_breakdown --steps 2105          # one whole SST-2 epoch per route

Both routes of ``fine_tuning.py`` (``neobert_tasks`` and ``trainer_dynamic``: dynamic padding and length
grouping) train the same randomly initialised model on the same sample, in turns every ``--block-steps``
steps (``interleave.py``), with timestamps at the loop's own hooks, so no profiler slows the small ops:

* data and loop: from the end of the previous step to the model's forward (fetching and collating the
  batch, moving it, the hooks that run before the step: reseeding, the loss guard);
* forward: the model's forward (a forward pre-hook and hook);
* Lightning only, split further: the loss and ``self.log``; ``zero_grad``; the backward pass; the rest of
  the closure. For the ``Trainer`` these are one phase, loss and backward (it zeroes after the step);
* optimizer step: the update itself (an optimizer step post-hook, or the Trainer's ``on_optimizer_step``);
* after the step: to the end of the step (scheduler, the Trainer's ``zero_grad``, logging, callbacks).

Reported per route: milliseconds per step of each phase (mean over the timed steps) and the step's total,
then the ratio of the totals. The first ``--warmup-steps`` are not timed.

``--hooks`` times the pieces of the ``fit`` loop one by one instead: every callback hook that runs around a
training step, the module's ``log``, ``training_step`` and optimizer hooks (each wrapped in a timer), and
fetching and collating one batch.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import datasets
import lightning as L
import torch
from transformers import TrainerCallback

from bench.common import SHAPES, shape_label, write_json
from bench.fine_tuning import BATCH_SIZES, initial_state, sample_task
from bench.interleave import Baton, StepClock, run_in_turns
from bench.routes import ROUTES, RouteSettings, TrainerRoute, evaluate_accuracy
from neobert_tasks.data.glue import GLUE_TASKS

LIGHTNING_PHASES = ("data and loop", "forward", "loss and logging", "zero_grad", "backward", "closure rest",
                    "optimizer step", "after the step")  # fmt: skip
TRAINER_PHASES = ("data and loop", "forward", "loss and backward", "optimizer step", "after the step")


class PhaseClock:
    """Accumulates the seconds between consecutive marks of one step, by phase, for the timed steps."""

    def __init__(self, step_clock: StepClock):
        self.step_clock = step_clock  # its `_last` is the step's start, after any wait for the baton
        self.seconds: dict[str, float] = defaultdict(float)
        self.timed_steps = 0
        self.tokens = Counter()  # "padded" and "real" tokens of the timed steps' training forwards
        self._last = 0.0

    def begin(self) -> None:
        self._last = self.step_clock._last

    def mark(self, phase: str) -> None:
        now = time.perf_counter()
        if self.step_clock.steps >= self.step_clock.warmup_steps:
            self.seconds[phase] += now - self._last
        self._last = now

    def end(self, phase: str) -> None:
        self.mark(phase)
        if self.step_clock.steps >= self.step_clock.warmup_steps:
            self.timed_steps += 1

    def watch(self, model: torch.nn.Module) -> None:
        model.register_forward_pre_hook(self._count_tokens, with_kwargs=True)
        model.register_forward_pre_hook(lambda *args: self._at_forward("data and loop"))
        model.register_forward_hook(lambda *args: self._at_forward("forward"))

    def _count_tokens(self, module, args, kwargs) -> None:
        # Before the mark that ends "data and loop": charged there, alike in every route (~5 µs a step).
        mask = kwargs.get("attention_mask")
        if (
            torch.is_grad_enabled()
            and mask is not None
            and self.step_clock.steps >= self.step_clock.warmup_steps
        ):
            self.tokens["padded"] += mask.numel()
            self.tokens["real"] += int(mask.sum())

    def _at_forward(self, phase: str) -> None:
        if torch.is_grad_enabled():  # training forwards only
            if phase == "data and loop":
                self.begin()
            self.mark(phase)


class LightningPhases(L.Callback):
    def __init__(self, clock: PhaseClock):
        self.clock = clock

    def on_train_start(self, trainer, pl_module) -> None:
        self.clock.watch(pl_module.model)
        trainer.optimizers[0].register_step_post_hook(lambda *args: self.clock.mark("optimizer step"))

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        self.clock.mark("loss and logging")

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.clock.mark("zero_grad")

    def on_after_backward(self, trainer, pl_module) -> None:
        self.clock.mark("backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.clock.mark("closure rest")

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.clock.end("after the step")


class TrainerPhases(TrainerCallback):
    def __init__(self, clock: PhaseClock):
        self.clock = clock

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.clock.watch(model)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.clock.mark("loss and backward")

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.clock.mark("optimizer step")

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.end("after the step")


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.step_breakdown", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--task", default="sst2", choices=sorted(BATCH_SIZES))
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--routes", nargs="+", default=["neobert_tasks", "trainer_dynamic"], choices=sorted(ROUTES)
    )
    parser.add_argument("--steps", type=int, default=300, help="timed steps per route")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--block-steps", type=int, default=20, help="steps per turn")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=872, help="validation examples scored after")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--tokenizer", default="../shared/tokenizers/bert-base-uncased")
    parser.add_argument("--hooks", action="store_true", help="time each hook of neobert_tasks' loop instead")
    parser.add_argument("--json", default=None, help="write the breakdown here")
    return parser.parse_args(argv)


STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_zero_grad", "on_before_backward",
              "on_after_backward", "on_before_optimizer_step")  # fmt: skip
MODULE_METHODS = ("log", "on_train_batch_start", "training_step", "optimizer_step", "optimizer_zero_grad",
                  "lr_scheduler_step")  # fmt: skip


def time_calls(owner, name: str, label: str, seconds: dict, calls: Counter) -> None:
    """Replace ``owner.name`` by a wrapper that adds its duration to ``seconds[label]``."""
    function = getattr(owner, name)

    @functools.wraps(function)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[label] += time.perf_counter() - started
            calls[label] += 1

    setattr(owner, name, timed)


class _HookTimers(L.Callback):
    """Wraps the other callbacks' step hooks and the module's methods when training starts."""

    def __init__(self, seconds: dict, calls: Counter):
        self.seconds, self.calls = seconds, calls

    def on_train_start(self, trainer, pl_module) -> None:
        for callback in trainer.callbacks:
            for hook in STEP_HOOKS:
                if callback is not self and getattr(type(callback), hook) is not getattr(L.Callback, hook):
                    time_calls(callback, hook, f"{type(callback).__name__}.{hook}", self.seconds, self.calls)
        for method in MODULE_METHODS:
            time_calls(pl_module, method, f"module.{method}", self.seconds, self.calls)


def route_settings(arguments: argparse.Namespace, work: Path) -> RouteSettings:
    """The routes' shared settings: the task's data sample, the model shape and its initial weights."""
    batch_size = BATCH_SIZES[arguments.task]
    total = arguments.warmup_steps + arguments.steps
    return RouteSettings(
        task=arguments.task, shape=SHAPES[arguments.shape], precision=arguments.precision,
        batch_size=batch_size, total_steps=total, learning_rate=arguments.learning_rate,
        data_dirs=sample_task(arguments, arguments.task, batch_size, total, work / "data"),
        tokenizer=arguments.tokenizer, max_length=arguments.max_length, work_dir=work,
        initial_state=initial_state(arguments.shape, GLUE_TASKS[arguments.task].num_labels, arguments.seed),
    )  # fmt: skip


def time_hooks(arguments: argparse.Namespace, work: Path) -> dict[str, float]:
    """Milliseconds per step of each hook of neobert_tasks' loop, and of fetching and collating a batch."""
    settings = route_settings(arguments, work)
    total = settings.total_steps
    seconds, calls = defaultdict(float), Counter()
    route = ROUTES["neobert_tasks"](
        settings, StepClock("neobert_tasks", Baton(["neobert_tasks"]), total, total)
    )
    route.extra_callbacks.append(_HookTimers(seconds, calls))
    route.train()
    result = {
        label: value * 1e3 / total for label, value in sorted(seconds.items(), key=lambda item: -item[1])
    }
    loader = route.datamodule.train_dataloader()
    indices = next(iter(loader.batch_sampler))
    dataset = loader.dataset
    fetch = [_seconds(lambda: loader.collate_fn(dataset.__getitems__(indices))) for _ in range(200)]
    result["fetch and collate one batch"] = statistics.median(fetch) * 1e3
    return result


def _seconds(function) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def run(arguments: argparse.Namespace, work: Path) -> dict[str, dict]:
    """Train the routes in turns with phase clocks; per route its phases (ms/step) and accuracy."""
    settings = route_settings(arguments, work)
    baton = Baton(arguments.routes)
    runners, clocks = {}, {}
    for name in arguments.routes:
        step_clock = StepClock(name, baton, arguments.warmup_steps, arguments.block_steps)
        runners[name] = ROUTES[name](settings, step_clock)
        clocks[name] = PhaseClock(step_clock)
        phases = TrainerPhases if isinstance(runners[name], TrainerRoute) else LightningPhases
        runners[name].extra_callbacks.append(phases(clocks[name]))
    errors = run_in_turns({name: runner.train for name, runner in runners.items()}, baton)
    if errors:
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"route {name} failed") from error
    results = {}
    for name, clock in clocks.items():
        steps = max(clock.timed_steps, 1)
        phases = {phase: seconds * 1e3 / steps for phase, seconds in clock.seconds.items()}
        results[name] = {
            "phases_ms": phases,
            "step_ms": sum(phases.values()),
            "timed_steps": clock.timed_steps,
            "padded_tokens_per_step": clock.tokens["padded"] / steps,
            "padding": 1 - clock.tokens["real"] / max(clock.tokens["padded"], 1),
            "accuracy": evaluate_accuracy(runners[name].trained_model(), settings),
        }
    return results


def main() -> None:
    datasets.disable_progress_bars()
    arguments = parse_arguments()
    if arguments.hooks:
        with tempfile.TemporaryDirectory(prefix="neobert-hooks-") as work:
            costs = time_hooks(arguments, Path(work))
        print(f"neobert_tasks, {arguments.task}, {shape_label(arguments.shape)}, {arguments.precision}:")
        for label, milliseconds in costs.items():
            print(f"  {label:55s} {milliseconds:8.3f}")
        write_json(
            arguments.json, {"settings": {k: str(v) for k, v in vars(arguments).items()}, "hooks": costs}
        )
        return
    with tempfile.TemporaryDirectory(prefix="neobert-steps-") as work:
        results = run(arguments, Path(work))
    print(f"{arguments.task}, {shape_label(arguments.shape)}, {arguments.precision}, batch "
          f"{BATCH_SIZES[arguments.task]}, {torch.get_num_threads()} threads; ms per step")  # fmt: skip
    names = list(results)
    print("| phase | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for phase in dict.fromkeys(LIGHTNING_PHASES + TRAINER_PHASES):
        cells = [results[name]["phases_ms"].get(phase) for name in names]
        print(f"| {phase} | " + " | ".join("–" if cell is None else f"{cell:.2f}" for cell in cells) + " |")
    print("| **step** | " + " | ".join(f"**{results[name]['step_ms']:.2f}**" for name in names) + " |")
    print("| tokens per step (padding) | " + " | ".join(
        f"{results[name]['padded_tokens_per_step']:.0f} ({results[name]['padding']:.1%})" for name in names
    ) + " |")  # fmt: skip
    print("| accuracy | " + " | ".join(f"{results[name]['accuracy']:.4f}" for name in names) + " |")
    if len(names) > 1:
        ratio = results[names[0]]["step_ms"] / results[names[1]]["step_ms"]
        print(f"{names[0]} / {names[1]}: {ratio:.2f}× the time per step")
    write_json(
        arguments.json, {"settings": {k: str(v) for k, v in vars(arguments).items()}, "routes": results}
    )


if __name__ == "__main__":
    main()
