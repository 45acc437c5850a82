"""What LoRA saves against full fine-tuning: step time, peak memory, checkpoint size and trainable weights.

``python -m bench.peft_cost [--shape base] [--steps 12] [--precision bf16-mixed]`` runs ``fit`` on SST-2
(``configs/glue/sst2.yaml``, batch 32, random weights of the given shape: the hub checkpoint is not needed
to time a step) with full fine-tuning, with ``configs/presets/lora.yaml`` (r = 8 on qkv, wo, w12, w3, the
head in full, no LoRA dropout), and with a LoRA dropout of 0.1 (peft's dropout keeps a dropped-out copy
of every adapted layer's input for the backward pass). Each route runs in its own process, so that its
peak memory is its own; the routes alternate, ``--repeats`` times each, and the medians are reported.

Step time is the median over the steps after ``--warmup-steps`` (Lightning's batch start to batch end:
forward, backward, optimizer step and logging). Peak memory is CUDA's peak allocation on a GPU, the
process's peak resident set on the CPU (with its growth from the start of training); beside it, the bytes
of the weights, gradients and optimizer state at the end of training. The checkpoint is the one Lightning
writes for resuming (``trainer.save_checkpoint``): the weights it keeps and the optimizer state.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

from bench.common import SHAPES, shape_label, write_json
from neobert_tasks.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
ROUTES = ("full", "lora", "lora_dropout")


class StepClock(L.Callback):
    """Seconds of each training batch, and the resident memory when training starts."""

    def __init__(self):
        self.seconds: list[float] = []
        self.start_rss_mib = self.peak_before_training_mib = self.peak_after_training_mib = 0.0

    def on_train_start(self, trainer, pl_module) -> None:
        self.start_rss_mib, self.peak_before_training_mib = resident_mib("VmRSS"), resident_mib("VmHWM")
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index) -> None:
        self._started = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_index) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds.append(time.perf_counter() - self._started)

    def on_train_end(self, trainer, pl_module) -> None:
        self.peak_after_training_mib = resident_mib("VmHWM")
        # What training must hold whatever the device: weights, gradients and optimizer state.
        tensors = [p for p in pl_module.parameters()] + [
            p.grad for p in pl_module.parameters() if p.grad is not None
        ]
        for state in trainer.optimizers[0].state.values():
            tensors += [value for value in state.values() if torch.is_tensor(value)]
        self.training_state_mib = sum(t.numel() * t.element_size() for t in tensors) / 2**20


def resident_mib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in MiB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def fit_args(route: str, shape: str, steps: int, precision: str, root: Path) -> list[str]:
    """The ``fit`` options of one route (without the subcommand: the CLI is built, then fitted here)."""
    model_config = json.dumps({**SHAPES[shape], "max_length": 1024})
    args = [
        "--config", str(REPO / "configs/glue/sst2.yaml"),
        "--data.init_args.data_dir", str(SHARED / "data/glue/sst2"),
        "--data.init_args.tokenizer", str(SHARED / "tokenizers/bert-base-uncased"),
        "--data.init_args.batch_size", "32", "--data.init_args.cache_dir", str(root / "cache"),
        "--data.init_args.limit_train_samples", str(32 * steps),
        "--model.init_args.pretrained", "null", "--model.init_args.model_config", model_config,
        "--model.init_args.compile", "false",
        "--trainer.precision", precision, "--trainer.max_steps", str(steps),
        "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root / "runs"),
        "--export.enabled", "false", "--trainer.callbacks", "[]",  # no validation: no early stopping
    ]  # fmt: skip
    if torch.cuda.is_available():
        args += ["--trainer.accelerator", "cuda", "--trainer.devices", "1"]
    else:
        args += ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]
    if route.startswith("lora"):
        args += ["--config", str(REPO / "configs/presets/lora.yaml")]
    if route == "lora_dropout":  # peft's LoRA dropout keeps a copy of each adapted layer's input
        args += ["--model.init_args.peft", "{r: 8, alpha: 16, dropout: 0.1}"]
    return args


def run_route(route: str, shape: str, steps: int, warmup: int, precision: str) -> dict:
    """One ``fit`` of ``route`` in this process: its timings, memory and checkpoint size."""
    clock = StepClock()
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        sys.argv = sys.argv[:1]  # LightningCLI reads args alone, not this script's own options
        cli = main(args=fit_args(route, shape, steps, precision, root), run=False)
        cli.trainer.callbacks.append(clock)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        checkpoint = root / "final.ckpt"
        cli.trainer.save_checkpoint(checkpoint)
        checkpoint_mib = checkpoint.stat().st_size / 2**20
    parameters = list(cli.model.parameters())
    timed = clock.seconds[warmup:]
    result = {
        "route": route,
        "median_step_s": statistics.median(timed),
        "steps_timed": len(timed),
        "checkpoint_mib": checkpoint_mib,
        "training_state_mib": clock.training_state_mib,
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "total_parameters": sum(p.numel() for p in parameters),
    }
    if torch.cuda.is_available():
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_memory_mib"] = clock.peak_after_training_mib
        result["memory_growth_mib"] = result["peak_memory_mib"] - clock.start_rss_mib
        result["peak_before_training_mib"] = clock.peak_before_training_mib
    return result


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peft_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="base", choices=sorted(SHAPES))
    parser.add_argument("--steps", type=int, default=12, help="training steps per run")
    parser.add_argument("--warmup-steps", type=int, default=2, help="first steps left out of the timing")
    parser.add_argument("--precision", default="bf16-mixed", help="Lightning precision")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each route, alternating")
    parser.add_argument("--routes", nargs="+", choices=ROUTES, default=list(ROUTES), help="routes to run")
    parser.add_argument("--route", choices=ROUTES, help=argparse.SUPPRESS)  # one run, in a child process
    parser.add_argument("--output", default=str(REPO / "bench/results/peft_cost.json"))
    return parser.parse_args(argv)


def main_cli(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    if arguments.route:  # the child: one run, its result as the last line of stdout
        result = run_route(arguments.route, arguments.shape, arguments.steps, arguments.warmup_steps,
                           arguments.precision)  # fmt: skip
        print(json.dumps(result))
        return
    runs: dict[str, list[dict]] = {route: [] for route in arguments.routes}
    child = [
        sys.executable, "-m", "bench.peft_cost", "--shape", arguments.shape, "--steps", str(arguments.steps),
        "--warmup-steps", str(arguments.warmup_steps), "--precision", arguments.precision,
    ]  # fmt: skip
    for _ in range(arguments.repeats):
        for route in arguments.routes:
            output = subprocess.run([*child, "--route", route], cwd=REPO, check=True, capture_output=True,
                                    text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
            runs[route].append(json.loads(output.stdout.strip().splitlines()[-1]))
    summary = {route: summarise(results) for route, results in runs.items()}
    device = "CUDA" if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(f"{shape_label(arguments.shape)}, SST-2, batch 32, {arguments.precision}, {device}")
    print("| route | trainable parameters | median s/step | peak memory MiB | weights + grads + optimizer MiB"
          " | checkpoint MiB |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for route, row in summary.items():
        share = 100 * row["trainable_parameters"] / row["total_parameters"]
        memory = f"{row['peak_memory_mib']:,.0f}"
        if "memory_growth_mib" in row:
            memory += f" (+{row['memory_growth_mib']:,.0f} in training)"
        print(f"| {route} | {row['trainable_parameters']:,} ({share:.2f}%) | {row['median_step_s']:.3f} | "
              f"{memory} | {row['training_state_mib']:,.0f} | {row['checkpoint_mib']:,.1f} |")  # fmt: skip
    write_json(arguments.output, {"arguments": vars(arguments), "routes": summary, "runs": runs})


def summarise(results: list[dict]) -> dict:
    """Medians over the repeats of one route (counts are the same in every run)."""
    keys = [key for key, value in results[0].items() if isinstance(value, float)]
    return {**results[0], **{key: statistics.median(result[key] for result in results) for key in keys}}


if __name__ == "__main__":
    main_cli()
