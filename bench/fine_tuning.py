"""Fine-tuning throughput: neobert_tasks ``fit`` against the transformers ``Trainer``, same model, same steps.

    python -m bench.fine_tuning            # SST-2 and MNLI, tiny and 6 × 768, fp32 and bf16
    python -m bench.fine_tuning --shapes base --precisions bf16 --steps 12
    python -m bench.fine_tuning --routes neobert_tasks trainer_dynamic --tasks sst2
    python -m bench.fine_tuning --device cuda --tasks sst2 --shapes base --precisions bf16 --steps 200 \
        --warmup-steps 20 --block-steps 20 --routes neobert_tasks neobert_tasks_torch_varlen trainer_dynamic

Routes, run side by side in one process on the same randomly initialised
``NeoBERTForSequenceClassification`` (same initial weights, batch size, learning-rate schedule and
number of optimiser steps, no gradient clipping):

* ``neobert_tasks``: ``fit`` through the CLI's Python entry point (``neobert_tasks.cli.main``) with
  ``configs/glue/<task>.yaml``, i.e. its datamodule, sampler, task module and defaults;
  (blocks compiled with ``torch.compile``, the GLUE configs' default; untimed warm-up steps hold the
  compilation);
* ``neobert_tasks_eager``: the same with ``model.init_args.compile: false``;
* ``neobert_tasks_token_budget``: the same with ``data.init_args.max_tokens: auto`` (batches of equal
  padded tokens, ``batch_size`` examples on average);
* ``neobert_tasks_torch_varlen``: the same on PyTorch's FlashAttention kernel (``varlen_attn``), CUDA
  only (the GLUE configs pin ``sdpa``);
* ``trainer_max_length``: ``Trainer`` as run_glue.py runs it by default: padding to ``max_length``
  (128), random order;
* ``trainer_dynamic``: ``Trainer`` with ``DataCollatorWithPadding`` and
  ``train_sampling_strategy="group_by_length"``.

Each route trains one epoch of ``warmup + steps`` batches taken from its own sampler's order over the
whole training split, spread evenly over its distribution of batch sizes in tokens (see
``sample_task``), so the timed steps represent a whole epoch, not the first, longest, block of a
length-grouped order; the first ``--warmup-steps`` steps are not timed.
Routes alternate every ``--block-steps`` steps (see ``interleave.py``). ``--device cuda`` trains every
route on one GPU (the matmul peak is then measured there too). Reported per route: real
(non-padding) tokens/s, padding fraction, MFU (model FLOPs on real tokens per second over the matmul
peak measured in this run, see ``common.py``), the ratio to ``neobert_tasks``, and accuracy on the
first ``--eval-samples`` validation examples after training. Models are randomly initialised (no
checkpoint offline), so accuracies after a few steps are near chance; they show that the routes
optimise alike, not how good NeoBERT is.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import traceback
from functools import cache
from pathlib import Path

import datasets
import torch
from transformers import AutoTokenizer
from transformers.trainer_pt_utils import get_length_grouped_indices

from bench.common import DTYPES, SHAPES, matmul_peak, model_flops, print_table, shape_label, write_json
from bench.interleave import Baton, StepClock, run_in_turns
from bench.routes import ROUTES, RouteSettings, evaluate_accuracy
from neobert_tasks.data.glue import GLUE_TASKS
from neobert_tasks.data.sampler import LengthGroupedSampler
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification

BATCH_SIZES = {"sst2": 32, "mnli": 16}  # the configs' (NeoBERT paper's) batch sizes
DEFAULT_STEPS = {"tiny": 60, "small": 12, "base": 8}
DEFAULT_LEARNING_RATES = {"tiny": 1e-3, "small": 1e-4, "base": 1e-4}
DEFAULT_ROUTES = ["neobert_tasks", "trainer_max_length", "trainer_dynamic"]


@cache
def training_lengths(
    task: str, data: Path, tokenizer: str, max_length: int
) -> tuple[datasets.Dataset, list[int]]:
    """The full training split and the token count of each of its examples (as every route tokenizes)."""
    train = datasets.load_dataset("parquet", data_files=str(data / task / "train.parquet"), split="train")
    encoder = AutoTokenizer.from_pretrained(tokenizer)
    texts = [list(train[column]) for column in GLUE_TASKS[task].text_columns]
    encoded = encoder(*texts, truncation=True, max_length=max_length)["input_ids"]
    return train, [len(ids) for ids in encoded]


def sample_batches(
    order: list[int], lengths: list[int], batch_size: int, count: int, seed: int, warmup: int = 0
) -> list[int]:
    """``warmup`` of an epoch's largest batches, then ``count`` of its batches spread evenly over the rest
    sorted by tokens, shuffled.

    Evenly spaced quantiles rather than a random draw give every route's timed steps its epoch's own
    distribution of batch sizes in tokens: with a dozen steps, a random draw's mean is off by ±20%, which
    changes tokens/s (fixed per-step costs) more than the routes differ. The untimed warm-up steps get the
    largest batches, because neobert_tasks' sampler puts its longest batches first whatever the order
    given: so they are the same batches for every route, and out of the timed sample.
    """
    batches = [
        order[start : start + batch_size] for start in range(0, len(order) - batch_size + 1, batch_size)
    ]
    batches.sort(key=lambda batch: sum(lengths[index] for index in batch))
    largest, batches = batches[len(batches) - warmup :], batches[: len(batches) - warmup]
    picked = [batches[int((position + 0.5) * len(batches) / count)] for position in range(count)]
    shuffled = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    return [index for batch in largest for index in batch] + [
        index for position in shuffled for index in picked[position]
    ]


def sample_task(arguments, task: str, batch_size: int, batches: int, folder: Path) -> dict[str, Path]:
    """Write each route family's training sample and the first validation examples as parquet files.

    A short run must not time only the first, longest, block of a length-grouped epoch, nor let a small
    dataset change how the sampler groups (transformers shrinks its mega-batches on small datasets). So
    the grouped routes train on batches taken from their own sampler's order over the *whole* training
    split (see ``sample_batches``): ``grouped`` from neobert_tasks' ``LengthGroupedSampler`` (which
    regroups them, as it would any data), ``trainer_grouped`` from transformers'
    ``get_length_grouped_indices`` (replayed in that order with ``train_sampling_strategy="sequential"``).
    ``uniform`` takes single examples the same way, for the route that pads to ``max_length``.
    """
    train, lengths = training_lengths(task, arguments.data, arguments.tokenizer, arguments.max_length)
    generator = torch.Generator().manual_seed(arguments.seed)
    by_length = sorted(range(len(lengths)), key=lengths.__getitem__)
    orders = {
        # Examples at evenly spaced length quantiles, in random order: one-example "batches".
        "uniform": sample_batches(by_length, lengths, 1, batches * batch_size, arguments.seed),
        "grouped": sample_batches(
            list(LengthGroupedSampler(lengths, batch_size, arguments.seed)),
            lengths,
            batch_size,
            batches - arguments.warmup_steps,
            arguments.seed,
            arguments.warmup_steps,
        ),
        "trainer_grouped": sample_batches(
            get_length_grouped_indices(lengths, batch_size, generator=generator),
            lengths,
            batch_size,
            batches - arguments.warmup_steps,
            arguments.seed,
            arguments.warmup_steps,
        ),
    }
    validation_split = GLUE_TASKS[task].validation_splits[0]
    validation_file = arguments.data / task / f"{validation_split}.parquet"
    evaluation = datasets.load_dataset("parquet", data_files=str(validation_file), split="train")
    evaluation = evaluation.select(range(min(arguments.eval_samples, len(evaluation))))
    folders = {}
    for name, indices in orders.items():
        folders[name] = folder / name
        folders[name].mkdir(parents=True, exist_ok=True)
        train.select(indices).to_parquet(folders[name] / "train.parquet")
        evaluation.to_parquet(folders[name] / f"{validation_split}.parquet")
    return folders


def initial_state(shape: str, num_labels: int, seed: int) -> dict[str, torch.Tensor]:
    """The weights every route starts from."""
    torch.manual_seed(seed)
    config = NeoBERTConfig(**SHAPES[shape], num_labels=num_labels, max_length=512)
    return NeoBERTForSequenceClassification(config).state_dict()


def run_configuration(
    arguments, task: str, shape: str, precision: str, peaks: dict, work: Path
) -> list[dict]:
    """Train every route on one (task, shape, precision) in turns; return one row per route."""
    batch_size = arguments.batch_size or BATCH_SIZES.get(task, 32)
    steps = arguments.steps or DEFAULT_STEPS[shape]
    total_steps = arguments.warmup_steps + steps
    folder = work / f"{task}-{shape}-{precision}"
    data_dirs = sample_task(arguments, task, batch_size, total_steps, folder / "data")
    settings = RouteSettings(
        task=task,
        shape=SHAPES[shape],
        precision=precision,
        batch_size=batch_size,
        total_steps=total_steps,
        learning_rate=arguments.learning_rate or DEFAULT_LEARNING_RATES[shape],
        data_dirs=data_dirs,
        tokenizer=arguments.tokenizer,
        max_length=arguments.max_length,
        work_dir=folder,
        initial_state=initial_state(shape, GLUE_TASKS[task].num_labels, arguments.seed),
        device=arguments.device,
    )
    # Every configuration compiles afresh (its compile time lands in its own untimed warm-up steps) and
    # the graphs of earlier shapes and precisions do not count towards dynamo's recompile limit.
    torch._dynamo.reset()
    baton = Baton(arguments.routes)
    clocks = {
        name: StepClock(name, baton, arguments.warmup_steps, arguments.block_steps)
        for name in arguments.routes
    }
    runners = {name: ROUTES[name](settings, clocks[name]) for name in arguments.routes}
    errors = run_in_turns({name: runner.train for name, runner in runners.items()}, baton)
    if len(errors) == len(runners):
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"route {name} failed") from error
    for name, error in errors.items():  # the other routes' rows still count
        print(f"route {name} failed:\n{''.join(traceback.format_exception(error))}", flush=True)
        runners.pop(name)
    config = NeoBERTConfig(**SHAPES[shape], num_labels=GLUE_TASKS[task].num_labels)
    rows = []
    for name, runner in runners.items():
        summary = clocks[name].summary()
        flops = model_flops(config, clocks[name].lengths, training=True)
        flops_per_second = flops / summary["seconds"] if summary["seconds"] else 0.0
        rows.append(
            {
                "task": task,
                "shape": shape_label(shape),
                "precision": precision,
                "route": name,
                "batch_size": batch_size,
                **summary,
                "model_tflops_per_second": flops_per_second / 1e12,
                "mfu": flops_per_second / peaks[precision],
                "accuracy": evaluate_accuracy(runner.trained_model(), settings),
            }
        )
    # A route's trainer and optimiser sit in reference cycles (Lightning, accelerate): without a collection,
    # every configuration's models and AdamW states (4 GB per route at the base shape) stay in memory.
    runners.clear()
    gc.collect()
    reference = next((row for row in rows if row["route"] == "neobert_tasks"), rows[0])
    for row in rows:
        row["speed_vs_neobert_tasks"] = row["real_tokens_per_second"] / reference["real_tokens_per_second"]
    return rows


COLUMNS = [
    ("task", "task", ""),
    ("shape", "shape", ""),
    ("precision", "prec", ""),
    ("route", "route", ""),
    ("timed_steps", "steps", "d"),
    ("seconds_per_step", "s/step", ".3f"),
    ("real_tokens_per_second", "real tok/s", ",.0f"),
    ("padding_fraction", "padding", ".1%"),
    ("mfu", "MFU", ".1%"),
    ("speed_vs_neobert_tasks", "× ours", ".2f"),
    ("accuracy", "accuracy", ".3f"),
]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mnli"], choices=sorted(BATCH_SIZES))
    parser.add_argument("--shapes", nargs="+", default=["tiny", "small"], choices=sorted(SHAPES))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--routes", nargs="+", default=DEFAULT_ROUTES, choices=sorted(ROUTES))
    parser.add_argument(
        "--steps", type=int, default=None, help=f"timed steps per route; default {DEFAULT_STEPS}"
    )
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps before timing")
    parser.add_argument("--block-steps", type=int, default=4, help="steps a route runs before handing over")
    parser.add_argument("--batch-size", type=int, default=None, help=f"default per task: {BATCH_SIZES}")
    parser.add_argument("--learning-rate", type=float, default=None, help=f"default {DEFAULT_LEARNING_RATES}")
    parser.add_argument("--max-length", type=int, default=128, help="truncation (and max_length padding)")
    parser.add_argument("--eval-samples", type=int, default=512, help="validation examples for accuracy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where every route trains")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--tokenizer", default="../shared/tokenizers/bert-base-uncased")
    parser.add_argument("--json", default="runs/bench/fine_tuning.json", help="where to write the rows")
    return parser.parse_args(argv)


def main() -> None:
    datasets.disable_progress_bars()
    arguments = parse_arguments()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    # On a GPU, the square size that reaches its peak (as bench.gpu_check measures it).
    sizes = (8192,) if arguments.device == "cuda" else (2048, 4096)
    peaks = {name: matmul_peak(DTYPES[name], arguments.device, sizes) for name in arguments.precisions}
    print("matmul peak: " + ", ".join(f"{name} {peak / 1e9:,.0f} GFLOP/s" for name, peak in peaks.items()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="neobert-bench-") as work:
        for task in arguments.tasks:
            for shape in arguments.shapes:
                for precision in arguments.precisions:
                    print(f"\n{task}, {shape_label(shape)}, {precision}", flush=True)
                    new_rows = run_configuration(arguments, task, shape, precision, peaks, Path(work))
                    print_table(new_rows, COLUMNS)
                    rows.extend(new_rows)
                    # Kept as it goes, so a run cut short (out of memory, interrupted) keeps what it measured.
                    write_json(arguments.json, {"settings": json_settings(arguments), "rows": rows})
    # The peak again at the end: MFU is taken against the better of the two (the machine's peak), and the
    # gap between them shows how noisy the machine was during the run.
    peaks_after = {name: matmul_peak(DTYPES[name], arguments.device, sizes) for name in arguments.precisions}
    for row in rows:
        row["mfu"] = (
            row["model_tflops_per_second"]
            * 1e12
            / max(peaks[row["precision"]], peaks_after[row["precision"]])
        )
    print("\nall configurations (MFU against the better of the two peak measurements)")
    print_table(rows, COLUMNS)
    print("matmul peak after: " + ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s" for k, v in peaks_after.items()))
    write_json(
        arguments.json,
        {
            "settings": json_settings(arguments),
            "matmul_peak_before": peaks,
            "matmul_peak_after": peaks_after,
            "rows": rows,
        },
    )


def json_settings(arguments: argparse.Namespace) -> dict:
    return {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(arguments).items()}


if __name__ == "__main__":
    main()
