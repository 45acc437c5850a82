"""Batches of a fixed sentence count against batches sized by a token budget, on the same examples.

    python -m bench.token_budget                       # SST-2, 6 × 768, bf16
    python -m bench.token_budget --task mnli --shape base --batches 12

Takes ``--batches`` consecutive batches of ``--batch-size`` sentences from neobert_tasks'
length-grouped training order (what ``fit`` trains on), then cuts the very same examples, in the same
order, into as many batches again, each holding about the same number of padded tokens (a token
budget). Both sets train the same model (forward, backward, fused AdamW step) with the same number of
optimiser steps over the same tokens, in alternating blocks of steps; the table gives each set's real
tokens/s, its spread of tokens per batch and the speed of the token budget relative to sentence counts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from bench.common import DTYPES, SHAPES, print_table, shape_label, write_json
from bench.fine_tuning import BATCH_SIZES, training_lengths
from neobert_tasks.data.glue import GLUE_TASKS
from neobert_tasks.data.sampler import LengthGroupedSampler
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification


def token_budget_batches(order: list[int], lengths: list[int], count: int) -> list[list[int]]:
    """``order`` cut into ``count`` consecutive batches of about equal padded tokens (batch × longest)."""
    budget = sum(lengths[index] for index in order) / count
    batches, current = [], []
    for index in order:
        longest = max([lengths[index]] + [lengths[i] for i in current])
        if current and (len(current) + 1) * longest > budget * 1.05 and len(batches) < count - 1:
            batches.append(current)
            current = []
        current.append(index)
    return [*batches, current]


def make_batch(indices: list[int], token_ids: list[list[int]], num_labels: int) -> dict[str, torch.Tensor]:
    longest = max(len(token_ids[index]) for index in indices)
    input_ids = torch.zeros(len(indices), longest, dtype=torch.long)
    attention_mask = torch.zeros(len(indices), longest, dtype=torch.long)
    for row, index in enumerate(indices):
        ids = token_ids[index]
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    labels = torch.randint(
        0, num_labels, (len(indices),), generator=torch.Generator().manual_seed(len(indices))
    )
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def sample_batchings(arguments, batch_size: int) -> tuple[dict[str, list[list[int]]], list[list[int]]]:
    """Both batchings of the same examples, and every training example's token ids."""
    train, lengths = training_lengths(
        arguments.task, Path(arguments.data), arguments.tokenizer, arguments.max_length
    )
    order = list(LengthGroupedSampler(lengths, batch_size, arguments.seed))
    # Past the first (longest) mega-batches, so the sample is typical; then consecutive batches.
    start = len(order) // 3
    sample = order[start : start + arguments.batches * batch_size]
    columns = [list(train[column]) for column in GLUE_TASKS[arguments.task].text_columns]
    encoder = AutoTokenizer.from_pretrained(arguments.tokenizer)
    token_ids = encoder(*columns, truncation=True, max_length=arguments.max_length)["input_ids"]
    batchings = {
        "sentence count": [sample[i : i + batch_size] for i in range(0, len(sample), batch_size)],
        "token budget": token_budget_batches(sample, lengths, arguments.batches),
    }
    return batchings, token_ids


def train_in_turns(arguments, batchings, token_ids) -> dict[str, dict]:
    """Train one model per batching from the same weights, alternating blocks of steps; time the steps."""
    num_labels = GLUE_TASKS[arguments.task].num_labels
    torch.manual_seed(arguments.seed)
    config = NeoBERTConfig(**SHAPES[arguments.shape], num_labels=num_labels, max_length=512)
    initial = NeoBERTForSequenceClassification(config).state_dict()
    runs = {}
    for name, batches in batchings.items():
        model = NeoBERTForSequenceClassification(config).train()
        model.load_state_dict(initial)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
        tensors = [make_batch(batch, token_ids, num_labels) for batch in batches]
        runs[name] = {"model": model, "optimizer": optimizer, "batches": tensors, "seconds": 0.0}
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=arguments.precision == "bf16")

    def step(run, batch) -> None:
        with autocast:
            loss = run["model"](**batch).loss
        loss.backward()
        run["optimizer"].step()
        run["optimizer"].zero_grad()

    for run in runs.values():  # warm-up: the largest batch of each set, untimed
        step(run, max(run["batches"], key=lambda batch: batch["input_ids"].numel()))
    for block_start in range(0, arguments.batches, arguments.block_steps):
        for run in runs.values():
            for batch in run["batches"][block_start : block_start + arguments.block_steps]:
                began = time.perf_counter()
                step(run, batch)
                run["seconds"] += time.perf_counter() - began
    return runs


def summarise(runs: dict[str, dict]) -> list[dict]:
    rows = []
    for name, run in runs.items():
        real = sum(int(batch["attention_mask"].sum()) for batch in run["batches"])
        padded = [batch["input_ids"].numel() for batch in run["batches"]]
        rows.append(
            {
                "batching": name,
                "steps": len(run["batches"]),
                "real_tokens": real,
                "padded_min": min(padded),
                "padded_max": max(padded),
                "padding": 1 - real / sum(padded),
                "real_tokens_per_second": real / run["seconds"],
            }
        )
    for row in rows:
        row["speed_vs_sentence_count"] = row["real_tokens_per_second"] / rows[0]["real_tokens_per_second"]
    return rows


COLUMNS = [
    ("batching", "batching", ""),
    ("steps", "steps", "d"),
    ("real_tokens", "real tokens", ",d"),
    ("padded_min", "min tokens", ",d"),
    ("padded_max", "max tokens", ",d"),
    ("padding", "padding", ".1%"),
    ("real_tokens_per_second", "real tok/s", ",.0f"),
    ("speed_vs_sentence_count", "×", ".2f"),
]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--task", default="sst2", choices=sorted(BATCH_SIZES))
    parser.add_argument("--shape", default="small", choices=sorted(SHAPES))
    parser.add_argument("--precision", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--batches", type=int, default=32, help="optimiser steps per batching")
    parser.add_argument("--batch-size", type=int, default=None, help=f"sentences; default {BATCH_SIZES}")
    parser.add_argument("--block-steps", type=int, default=4, help="steps of one batching before the other's")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="../shared/data/glue")
    parser.add_argument("--tokenizer", default="../shared/tokenizers/bert-base-uncased")
    parser.add_argument("--json", default="runs/bench/token_budget.json")
    return parser.parse_args(argv)


def main() -> None:
    arguments = parse_arguments()
    batchings, token_ids = sample_batchings(arguments, arguments.batch_size or BATCH_SIZES[arguments.task])
    rows = summarise(train_in_turns(arguments, batchings, token_ids))
    threads = torch.get_num_threads()
    print(f"{arguments.task}, {shape_label(arguments.shape)}, {arguments.precision}, {threads} threads")
    print_table(rows, COLUMNS)
    write_json(arguments.json, {"settings": vars(arguments), "rows": rows})


if __name__ == "__main__":
    main()
