"""Where a training step's time goes: torch.profiler over a real ``fit`` or ``Trainer`` route.

    python -m bench.profile_step             # neobert_tasks, tiny, SST-2, fp32
    python -m bench.profile_step --route trainer_dynamic --precision bf16 --shape small
    python -m bench.profile_step --shape base --precision bf16 --batch-size 128   # 4× the config's tokens

Runs one route of ``fine_tuning.py`` alone on the same data sample, skips ``--warmup-steps``, profiles
``--steps`` steps, and prints the time per step by kind of work: matmuls, attention, element-wise
math, dtype casts, the optimiser, the embedding's backward, memory fills, other ATen ops, and what is
left of the wall time (Python: the loop, hooks, logging, data collation), then the top ops. Compiling a
new variant of the blocks, when a profiled step brings a new shape class, is reported apart and left out
of the step's time and the shares. Writes ``--trace`` (a Chrome trace) and ``--json`` when given.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import datasets
import lightning as L
import torch
from torch.profiler import ProfilerActivity, profile
from transformers import TrainerCallback

from bench.common import SHAPES, shape_label, write_json
from bench.fine_tuning import BATCH_SIZES, DEFAULT_LEARNING_RATES, initial_state, sample_task
from bench.interleave import Baton, StepClock
from bench.routes import ROUTES, RouteSettings, TrainerRoute
from neobert_tasks.data.glue import GLUE_TASKS

# Kind of work of an ATen op, by name; the first pattern contained in the name wins.
CATEGORIES = [
    ("optimizer", ("adam", "Optimizer.", "_foreach")),
    ("attention", ("scaled_dot_product", "softmax", "masked_fill", "bmm")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::matmul", "aten::linear")),
    ("embedding backward", ("embedding_dense_backward", "embedding_backward", "index_add", "index_put")),
    ("dtype casts", ("aten::copy_", "aten::_to_copy", "aten::to")),
    ("memory fills", ("aten::fill_", "aten::zero_", "aten::zeros", "aten::empty", "aten::new_zeros")),
    (
        "element-wise",
        ("aten::mul", "aten::add", "aten::sub", "aten::div", "silu", "aten::pow", "rsqrt", "aten::mean",
         "aten::sum", "aten::neg", "tanh", "rms_norm", "dropout", "bernoulli", "aten::cat", "aten::stack"),
    ),
]  # fmt: skip


def category(name: str) -> str:
    for label, patterns in CATEGORIES:
        if any(pattern in name for pattern in patterns):
            return label
    return "other ATen ops"


class _LightningProfilerStepper(L.Callback):
    """Advances the profiler schedule at the end of every optimiser step of a Lightning fit."""

    def __init__(self, profiler: profile, ends: list[float]):
        self.profiler, self.ends = profiler, ends

    def on_train_batch_end(self, *args, **kwargs) -> None:
        self.profiler.step()
        self.ends.append(time.perf_counter())


class _TrainerProfilerStepper(TrainerCallback):
    """The same for a transformers Trainer."""

    def __init__(self, profiler: profile, ends: list[float]):
        self.profiler, self.ends = profiler, ends

    def on_step_end(self, args, state, control, **kwargs):
        self.profiler.step()
        self.ends.append(time.perf_counter())


def profile_route(arguments, work: Path) -> tuple[profile, float]:
    """Train the route with the profiler on; return it and the wall seconds of the profiled steps."""
    batch_size = arguments.batch_size or BATCH_SIZES[arguments.task]
    total = arguments.warmup_steps + arguments.steps
    settings = RouteSettings(
        task=arguments.task,
        shape=SHAPES[arguments.shape],
        precision=arguments.precision,
        batch_size=batch_size,
        total_steps=total,
        learning_rate=DEFAULT_LEARNING_RATES[arguments.shape],
        data_dirs=sample_task(arguments, arguments.task, batch_size, total, work / "data"),
        tokenizer=arguments.tokenizer,
        max_length=arguments.max_length,
        work_dir=work,
        initial_state=initial_state(arguments.shape, GLUE_TASKS[arguments.task].num_labels, arguments.seed),
    )
    baton = Baton([arguments.route])
    route = ROUTES[arguments.route](settings, StepClock(arguments.route, baton, total, total))
    schedule = torch.profiler.schedule(
        wait=0, warmup=arguments.warmup_steps, active=arguments.steps, repeat=1
    )
    profiler = profile(activities=[ProfilerActivity.CPU], schedule=schedule)
    ends: list[float] = []
    stepper = _TrainerProfilerStepper if isinstance(route, TrainerRoute) else _LightningProfilerStepper
    route.extra_callbacks.append(stepper(profiler, ends))
    with profiler:
        route.train()
    return profiler, ends[total - 1] - ends[arguments.warmup_steps - 1]


COMPILING = "compiling (torch.compile)"


def compiling(event) -> bool:
    """Whether a profiled op ran inside torch.compile's own work (tracing, guards, code generation)."""
    while event is not None:
        if "(dynamo_timed)" in event.name:
            return True
        event = event.cpu_parent
    return False


def breakdown(profiler: profile, seconds: float, steps: int) -> tuple[list[dict], list[dict]]:
    """Milliseconds per step by kind of work, and the top ops by self time.

    A batch of a new shape class (a length on the other side of a kernel's threshold) compiles a variant
    of the blocks, also inside the profiled steps; that work is its own kind, ``compiling``, and the shares
    of the others are of the step without it, which is what every later step with such a batch costs.
    """
    kinds: Counter = Counter()
    for event in profiler.events():
        if event.self_cpu_time_total > 0:
            kind = COMPILING if compiling(event) else category(event.name)
            kinds[kind] += event.self_cpu_time_total / 1e3 / steps
    wall = seconds * 1e3 / steps
    compiled = kinds.pop(COMPILING, 0.0)
    step = wall - compiled
    rows = [
        {"kind": kind, "ms_per_step": value, "share": value / step} for kind, value in kinds.most_common()
    ]
    rest = step - sum(kinds.values())
    rows.append({"kind": "rest of the wall time (Python)", "ms_per_step": rest, "share": rest / step})
    rows.append({"kind": "step (wall, less compiling)", "ms_per_step": step, "share": 1.0})
    rows.append({"kind": COMPILING, "ms_per_step": compiled, "share": compiled / step})
    events = [event for event in profiler.key_averages() if event.self_cpu_time_total > 0]
    top = sorted(events, key=lambda event: -event.self_cpu_time_total)[:25]
    ops = [
        {
            "op": event.key,
            "calls_per_step": event.count / steps,
            "ms_per_step": event.self_cpu_time_total / 1e3 / steps,
        }
        for event in top
    ]
    return rows, ops


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--route", default="neobert_tasks", choices=sorted(ROUTES))
    parser.add_argument("--task", default="sst2", choices=sorted(BATCH_SIZES))
    parser.add_argument("--shape", default="tiny", choices=sorted(SHAPES))
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=None, help="default: the task config's")
    parser.add_argument("--steps", type=int, default=20, help="profiled steps")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--tokenizer", default="../shared/tokenizers/bert-base-uncased")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--trace", default=None, help="write a Chrome trace of the profiled steps here")
    parser.add_argument("--json", default=None, help="write the breakdown here")
    return parser.parse_args(argv)


def main() -> None:
    datasets.disable_progress_bars()
    arguments = parse_arguments()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    with tempfile.TemporaryDirectory(prefix="neobert-profile-") as work:
        profiler, seconds = profile_route(arguments, Path(work))
    rows, ops = breakdown(profiler, seconds, arguments.steps)
    *kinds, step, compiled = rows
    batch_size = arguments.batch_size or BATCH_SIZES[arguments.task]
    print(f"{arguments.route}, {arguments.task}, {shape_label(arguments.shape)}, {arguments.precision}, "
          f"batch {batch_size}, {torch.get_num_threads()} threads: {step['ms_per_step']:.1f} ms per step "
          f"(+{compiled['ms_per_step']:.1f} ms compiling)")  # fmt: skip
    for row in [*kinds, step]:
        print(f"  {row['kind']:32s} {row['ms_per_step']:8.2f} ms  {row['share']:6.1%}")
    print("top ops (self time)")
    for op in ops:
        print(f"  {op['op'][:50]:50s} {op['calls_per_step']:7.1f} calls {op['ms_per_step']:8.2f} ms")
    if arguments.trace:
        profiler.export_chrome_trace(arguments.trace)
    write_json(
        arguments.json,
        {"settings": {k: str(v) for k, v in vars(arguments).items()}, "rows": rows, "ops": ops},
    )


if __name__ == "__main__":
    main()
