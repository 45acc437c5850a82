"""Sentence-embedding training speed: neobert_tasks ``fit`` against sentence-transformers' trainer (issue 19).

    python -m bench.embedding_speed                       # tiny preset model, batch 64, 100 timed steps
    python -m bench.embedding_speed --routes neobert_tasks_shuffled sentence_transformers
    python -m bench.embedding_speed --grad-cache          # batch 1024 with GradCache against batch 64

Default mode: the routes train on the same NLI triplets (``../shared/data/nli_triplets``, split ``dev``:
6,568 (anchor, positive, negative) rows), from the same initial weights, with the same batch size,
number of optimiser steps, truncation, learning rate, warmup and linear decay to 0, AdamW betas,
epsilon and weight decay, in fp32 on the CPU, no gradient clipping, no validation, no checkpoints:

* ``neobert_tasks``: ``fit`` through ``neobert_tasks.cli.main`` with ``configs/embeddings/nli.yaml``,
  ``configs/presets/tiny.yaml`` and ``configs/presets/cpu.yaml``: ``EmbeddingTask`` (InfoNCE over
  in-batch and hard negatives, temperature 0.07, mean pooling) and ``PairDataModule`` (texts tokenized
  once before training, batches without a repeated text, length-grouped, each role padded to its own
  longest text, as the config's ``pad_to_multiple_of: 1`` says);
* ``neobert_tasks_shuffled``: the same with ``data.init_args.group_by_length false`` (shuffled batches,
  as sentence-transformers' sampler makes them);
* ``sentence_transformers``: ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` at
  ``scale = 1 / 0.07`` and ``BatchSamplers.NO_DUPLICATES``, as its documentation trains on triplets
  (texts tokenized by the data collator at every step; its loss encodes the anchors, then the
  positives and negatives in one merged batch). Its model is the first route's initial model, written
  with neobert_tasks' exporter and loaded with ``SentenceTransformer(folder, trust_remote_code=True)``
  (Transformer, mean Pooling, Normalize); before training, its embeddings of a few texts are checked
  against ``EmbeddingTask.embed``'s.

The routes run in one process, in turns (``interleave.py``): after ``--warmup-steps`` untimed steps each
route hands over to the next every ``--block-steps`` steps, so a noisy machine slows them alike. A
step is timed from the end of the previous one (batch fetching, collation and tokenization included).
Real tokens are the ones of the attention masks the model is called with in training (every role,
``[CLS]`` and ``[SEP]`` included, padding not): a forward pre-hook on neobert_tasks' backbone and on the
``SentenceTransformer`` sums them per step. Reported per route: median and mean seconds per step, real
tokens per step, real tokens/s (all timed steps' tokens over their seconds), the padding fraction of
the batches the model saw, and the ratio of real tokens/s to sentence-transformers' (issue 19's goal:
at least 1.3). ``setup s`` is the time from the start of ``fit``/``train`` to the first step (the
one-off tokenization of neobert_tasks' datamodule lands there).

``--grad-cache``: neobert_tasks alone, each configuration in a fresh subprocess so that its peak
memory is its own: batch ``--grad-cache-batch-size`` (1024) with ``model.init_args.grad_cache_chunk_size``
``--chunk-size`` (64), against batch ``--batch-size`` (64) without GradCache (and, with
``--include-uncached``, the large batch without it). Reported: real tokens/s (each text counted once,
though GradCache encodes it twice), the resident set size when training starts, its peak during
training (the kernel's high-water mark is reset when training starts) and over the whole process
(``ru_maxrss``: the setup's tokenization included).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import datasets
import lightning as L
import torch

from bench.common import SHAPES, print_table, write_json
from bench.embedding_routes import (
    REPOSITORY,
    EmbeddingClock,
    FitRoute,
    SentenceTransformersRoute,
    embedding_difference,
    export_initial_model,
    fit_arguments,
    triplets,
)
from bench.interleave import Baton, run_in_turns

ROUTES = ["neobert_tasks", "neobert_tasks_shuffled", "sentence_transformers"]
REFERENCE_ROUTE = "sentence_transformers"
DEFAULTS = {  # per mode: timed steps and untimed warm-up steps
    "compare": {"steps": 100, "warmup_steps": 3},
    "grad_cache": {"steps": 80, "warmup_steps": 1},
}


# ------------------------------------------------------------------------------------------------------
# Default mode: the routes in turns.


def build_routes(arguments: argparse.Namespace, work: Path, baton: Baton) -> tuple[dict, dict, float | None]:
    """The routes of ``arguments.routes`` from one set of initial weights; their clocks; the largest
    difference between the initial embeddings of neobert_tasks and sentence-transformers."""
    total_steps = arguments.warmup_steps + arguments.steps
    clocks = {
        name: EmbeddingClock(name, baton, arguments.warmup_steps, arguments.block_steps) for name in ROUTES
    }
    # The first neobert_tasks fit holds the initial weights every other route starts from.
    first = FitRoute(
        fit_arguments(arguments, work / "neobert_tasks", arguments.batch_size, total_steps),
        clocks["neobert_tasks"],
    )
    initial_state = {name: tensor.clone() for name, tensor in first.task.model.state_dict().items()}
    runners, difference = {}, None
    for name in arguments.routes:
        if name == REFERENCE_ROUTE:
            folder = export_initial_model(
                first.task, arguments.tokenizer, work / "export", arguments.max_length
            )
            settings = {"work": work, "batch_size": arguments.batch_size, "total_steps": total_steps,
                        "max_length": arguments.max_length, "seed": arguments.seed}  # fmt: skip
            dataset = triplets(arguments, work / "cache")
            runner = SentenceTransformersRoute(folder, dataset, first.task.hparams, settings, clocks[name])
            difference = embedding_difference(first.task, runner.model, dataset["anchor"][:8])
        elif name == "neobert_tasks":
            runner = first
        else:
            fit_args = fit_arguments(
                arguments, work / name, arguments.batch_size, total_steps, group_by_length=False
            )
            runner = FitRoute(fit_args, clocks[name])
            runner.task.model.load_state_dict(initial_state)
        runners[name] = runner
    return runners, clocks, difference


def compare_routes(arguments: argparse.Namespace, work: Path) -> tuple[list[dict], float | None]:
    """Train the routes in turns; one row per route."""
    baton = Baton(arguments.routes)
    runners, clocks, difference = build_routes(arguments, work, baton)
    if difference is not None:
        print(f"initial embeddings, neobert_tasks against sentence-transformers: max |Δ| = {difference:.2e}")
        if difference > 1e-4:
            raise RuntimeError("the routes do not start from the same model")
    errors = run_in_turns({name: runner.train for name, runner in runners.items()}, baton)
    if errors:
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"route {name} failed") from error
    rows = [{"route": name, "batch_size": arguments.batch_size, **clocks[name].summary()} for name in runners]
    reference = next((row for row in rows if row["route"] == REFERENCE_ROUTE), None)
    for row in rows:
        if reference and reference["real_tokens_per_second"]:
            row["speed_vs_sentence_transformers"] = (
                row["real_tokens_per_second"] / reference["real_tokens_per_second"]
            )
    return rows, difference


# ------------------------------------------------------------------------------------------------------
# --grad-cache: one neobert_tasks fit per subprocess, for its own peak memory.


def status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``); None off Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class _MemoryProbe(L.Callback):
    """At the start of training: the RSS, the peak so far, then a reset of the kernel's high-water mark
    (``/proc/self/clear_refs``), so that the peak at the end is the training's own."""

    def __init__(self):
        self.at_start: dict[str, float | bool] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.at_start = {
            "rss_at_train_start_mib": (status_kib("VmRSS") or 0) / 1024,
            "setup_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.at_start["peak_reset"] = True
        except OSError:
            self.at_start["peak_reset"] = False


def measure_alone(arguments: argparse.Namespace, spec: dict) -> dict:
    """One neobert_tasks fit in this process (``spec``: batch_size, chunk_size, steps); speed and memory."""
    baton = Baton([spec["name"]])
    clock = EmbeddingClock(spec["name"], baton, arguments.warmup_steps, block_steps=10**9)
    probe = _MemoryProbe()
    total_steps = arguments.warmup_steps + spec["steps"]
    with tempfile.TemporaryDirectory(prefix="neobert-bench-") as work:
        fit_args = fit_arguments(
            arguments, Path(work), spec["batch_size"], total_steps, chunk_size=spec["chunk_size"]
        )
        route = FitRoute(fit_args, clock, callbacks=(probe,))
        errors = run_in_turns({spec["name"]: route.train}, baton)
    if errors:
        raise next(iter(errors.values()))
    training_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        **spec,
        **clock.summary(),
        **probe.at_start,
        "training_peak_rss_mib": training_peak,
        "process_peak_rss_mib": max(training_peak, probe.at_start.get("setup_peak_rss_mib", 0.0)),
    }


def run_in_subprocess(arguments: argparse.Namespace, spec: dict) -> dict:
    """`measure_alone` in a fresh Python process, so that its peak memory is its own."""
    command = [
        sys.executable, "-m", "bench.embedding_speed", "--child", json.dumps(spec),
        "--shape", arguments.shape, "--max-length", str(arguments.max_length),
        "--warmup-steps", str(arguments.warmup_steps), "--threads", str(arguments.threads),
        "--seed", str(arguments.seed), "--data", str(arguments.data.resolve()), "--split", arguments.split,
        "--tokenizer", local_or_hub(arguments.tokenizer),
        *(["--learning-rate", str(arguments.learning_rate)] if arguments.learning_rate else []),
    ]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPOSITORY)
    if completed.returncode != 0:
        raise RuntimeError(f"{spec['name']} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def local_or_hub(name: str) -> str:
    """A tokenizer folder as an absolute path (the subprocess runs in the repository root), or a hub id."""
    return str(Path(name).resolve()) if Path(name).exists() else name


def grad_cache_specs(arguments: argparse.Namespace) -> list[dict]:
    large, chunk = arguments.grad_cache_batch_size, arguments.chunk_size
    specs = [
        {"name": f"batch {arguments.batch_size}", "batch_size": arguments.batch_size, "chunk_size": None,
         "steps": arguments.steps},
        {"name": f"batch {large}, GradCache {chunk}", "batch_size": large, "chunk_size": chunk,
         "steps": arguments.grad_cache_steps},
    ]  # fmt: skip
    if arguments.include_uncached:
        specs.append({"name": f"batch {large}", "batch_size": large, "chunk_size": None,
                      "steps": arguments.grad_cache_steps})  # fmt: skip
    return specs


# ------------------------------------------------------------------------------------------------------
# Command line.

COMPARE_COLUMNS = [
    ("route", "route", ""),
    ("timed_steps", "steps", "d"),
    ("median_seconds_per_step", "median s/step", ".4f"),
    ("seconds_per_step", "mean s/step", ".4f"),
    ("real_tokens_per_step", "real tok/step", ",.0f"),
    ("real_tokens_per_second", "real tok/s", ",.0f"),
    ("padding_fraction", "padding", ".1%"),
    ("speed_vs_sentence_transformers", "× theirs", ".2f"),
    ("setup_seconds", "setup s", ".1f"),
]
GRAD_CACHE_COLUMNS = [
    ("name", "configuration", ""),
    ("timed_steps", "steps", "d"),
    ("median_seconds_per_step", "median s/step", ".3f"),
    ("real_tokens_per_second", "real tok/s", ",.0f"),
    ("rss_at_train_start_mib", "RSS at start MiB", ",.0f"),
    ("training_peak_rss_mib", "training peak MiB", ",.0f"),
    ("process_peak_rss_mib", "process peak MiB", ",.0f"),
]


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--routes", nargs="+", default=ROUTES, choices=ROUTES)
    shapes = ["preset", *SHAPES]
    shape_help = "preset: configs/presets/tiny.yaml's 2 × 64; the others: bench.common.SHAPES"
    parser.add_argument("--shape", default="preset", choices=shapes, help=shape_help)
    parser.add_argument("--batch-size", type=int, default=64)
    compare, cached = DEFAULTS["compare"], DEFAULTS["grad_cache"]
    steps_help = (
        f"timed steps at --batch-size; default {compare['steps']} ({cached['steps']} with --grad-cache)"
    )
    parser.add_argument("--steps", type=int, default=None, help=steps_help)
    warmup_help = (
        f"untimed steps first; default {compare['warmup_steps']} ({cached['warmup_steps']} with --grad-cache)"
    )
    parser.add_argument("--warmup-steps", type=int, default=None, help=warmup_help)
    parser.add_argument("--block-steps", type=int, default=5, help="steps a route runs before handing over")
    parser.add_argument("--max-length", type=int, default=128, help="truncation of every text")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: the configs' (1e-3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=usable_cores(), help="torch threads (default: cores)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/nli_triplets"))
    parser.add_argument("--split", default="dev", help="training split of --data")
    parser.add_argument("--tokenizer", default="../shared/tokenizers/bert-base-uncased")
    parser.add_argument("--grad-cache", action="store_true", help="GradCache memory mode (subprocesses)")
    parser.add_argument("--grad-cache-batch-size", type=int, default=1024)
    parser.add_argument("--chunk-size", type=int, default=64, help="GradCache chunk of the large batch")
    parser.add_argument("--grad-cache-steps", type=int, default=5, help="timed steps of the large batch")
    parser.add_argument(
        "--include-uncached", action="store_true", help="also the large batch without GradCache"
    )
    parser.add_argument(
        "--json", default=None, help="default bench/results/embedding_speed[_grad_cache].json"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    arguments = parser.parse_args(argv)
    mode = "grad_cache" if arguments.grad_cache or arguments.child else "compare"
    for key, value in DEFAULTS[mode].items():
        if getattr(arguments, key) is None:
            setattr(arguments, key, value)
    if arguments.json is None:
        suffix = "_grad_cache" if mode == "grad_cache" else ""
        arguments.json = str(REPOSITORY / "bench" / "results" / f"embedding_speed{suffix}.json")
    return arguments


def settings_of(arguments: argparse.Namespace) -> dict:
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(arguments).items()}


def main() -> None:
    datasets.disable_progress_bars()
    arguments = parse_arguments()
    torch.set_num_threads(arguments.threads)
    if arguments.child:
        print(json.dumps(measure_alone(arguments, json.loads(arguments.child))))
        return
    if arguments.grad_cache:
        rows = []
        for spec in grad_cache_specs(arguments):
            print(f"{spec['name']}: {spec['steps']} timed steps, in a subprocess", flush=True)
            rows.append(run_in_subprocess(arguments, spec))
        print(f"\nmax_length {arguments.max_length}, shape {arguments.shape}, fp32")
        print_table(rows, GRAD_CACHE_COLUMNS)
        write_json(arguments.json, {"settings": settings_of(arguments), "rows": rows})
        return
    with tempfile.TemporaryDirectory(prefix="neobert-bench-") as work:
        rows, difference = compare_routes(arguments, Path(work))
    print(f"\nbatch {arguments.batch_size}, max_length {arguments.max_length}, shape {arguments.shape}, fp32")
    print_table(rows, COMPARE_COLUMNS)
    payload = {"settings": settings_of(arguments), "initial_embedding_difference": difference, "rows": rows}
    write_json(arguments.json, payload)


if __name__ == "__main__":
    main()
