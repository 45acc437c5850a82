"""Padding waste of GLUE training batches with and without length-grouped sampling.

    python -m bench.padding [--data ../shared/data/glue] [--tokenizer ../shared/tokenizers/bert-base-uncased]
                            [--tasks sst2 cola] [--batch-size 32]

Tokenizes each task's training split with the GLUE datamodule (cached), builds one epoch of batches
with the length-grouped sampler and with a plain shuffle, and prints the fraction of token slots that
are padding after dynamic padding to a multiple of 8. Uses the configs' per-task batch size unless
``--batch-size`` is given.
"""

from __future__ import annotations

import argparse
import json

import torch

from bench.common import batches_of, padding_fraction
from neobert_tasks.data import GLUEDataModule, LengthGroupedSampler

PAPER_BATCH_SIZES = {
    "cola": 8,
    "sst2": 32,
    "mrpc": 2,
    "stsb": 32,
    "qqp": 32,
    "mnli": 16,
    "qnli": 8,
    "rte": 32,
}


def measure(task: str, data: str, tokenizer: str, batch_size: int) -> dict:
    datamodule = GLUEDataModule(task, tokenizer=tokenizer, data_dir=f"{data}/{task}", batch_size=batch_size)
    datamodule.prepare_data()
    datamodule.setup("fit")
    lengths = datamodule.sequence_lengths("train")
    grouped = LengthGroupedSampler(lengths, batch_size, seed=0)
    shuffled = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    return {
        "task": task,
        "examples": len(lengths),
        "batch_size": batch_size,
        "mean_tokens": sum(lengths) / len(lengths),
        "padding_grouped": padding_fraction(lengths, batches_of(iter(grouped), batch_size), 8),
        "padding_shuffled": padding_fraction(lengths, batches_of(shuffled, batch_size), 8),
    }


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--data", default="../shared/data/glue", help="folder with one sub-folder per task")
    parser.add_argument("--tokenizer", default="../shared/tokenizers/bert-base-uncased", help="tokenizer")
    parser.add_argument("--tasks", nargs="+", default=["sst2", "cola"], help="GLUE tasks")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the paper's per-task size")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    print(f"{'task':6s} {'examples':>8s} {'batch':>5s} {'mean tokens':>11s} {'grouped':>8s} {'shuffled':>8s}")
    rows = []
    for task in args.tasks:
        row = measure(task, args.data, args.tokenizer, args.batch_size or PAPER_BATCH_SIZES.get(task, 32))
        rows.append(row)
        print(
            f"{task:6s} {row['examples']:8d} {row['batch_size']:5d} {row['mean_tokens']:11.1f} "
            f"{row['padding_grouped']:8.1%} {row['padding_shuffled']:8.1%}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
