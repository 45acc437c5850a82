"""Cost of NeoBERT against sequence length on this machine's CPU: tokens/s and peak memory per backend.

    python -m bench.forward_cpu                          # 4 × 768, fp32, 128 … 4096 tokens
    python -m bench.forward_cpu --layers 28 --lengths 128 512 --backends sdpa
    python -m bench.forward_cpu --precision bf16 --json runs/bench/lengths.json

For each attention backend (eager, sdpa, sdpa_varlen; flash_attention_2 only on CUDA, see
gpu_check.py) and each length, one fresh process builds a randomly initialised
``NeoBERTForSequenceClassification`` of width 768 (``--layers`` blocks: the default 4 keeps 4096-token
training steps to seconds on 2 cores; 28 is NeoBERT's depth) and measures, on batches of
``--tokens`` tokens (``tokens // length`` rows):

* ``train`` on full rows: forward + backward + AdamW step, tokens/s, and the peak resident memory
  beyond what the model, its gradients and the optimiser state already hold (the process's peak RSS
  minus its RSS after a warm-up step on a short batch);
* ``forward`` on full rows, inference mode;
* ``forward`` and ``train`` on rows of mixed lengths (uniform between a quarter and all of the length,
  the first row full), where the padded backends compute on padding and ``sdpa_varlen`` does not;
  tokens/s counts real tokens only.

Every batch holds the same number of tokens, so memory that is linear in the tokens stays flat from one
length to the next, and any ``L × L`` tensor kept for the backward pass shows as growth: the last column
is the extra training memory at each length over that at half of it (about 1 when linear; eager
attention keeps its scores and grows, so it is capped at ``--eager-max-length``). With ``--tokens``
equal to the longest length (one row of it), linear memory doubles instead.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.common import print_table, write_json

BACKENDS = ["eager", "sdpa", "sdpa_varlen"]
REPOSITORY = Path(__file__).resolve().parents[1]


def make_batch(batch: int, length: int, mixed: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` rows of ``length`` tokens (mixed: between a quarter and all of it, the first full)."""
    generator = torch.Generator().manual_seed(seed)
    lengths = [length] * batch
    if mixed:
        lengths = [
            int(value) for value in torch.randint(length // 4, length + 1, (batch,), generator=generator)
        ]
        lengths[0] = length  # the padded batch is always `length` wide
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, row_length in enumerate(lengths):
        input_ids[row, :row_length] = torch.randint(1, 30522, (row_length,), generator=generator)
        attention_mask[row, :row_length] = 1
    return input_ids, attention_mask


def rss_gib() -> float:
    """This process's peak resident set size so far (``ru_maxrss``: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def measure_in_this_process(
    backend: str, length: int, layers: int, tokens: int, precision: str, repeats: int
) -> dict:
    """Every measurement of one (backend, length); the training step on full rows goes first so that the
    process's peak RSS, a high-water mark, is that step's."""
    from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification

    torch.manual_seed(0)
    config = NeoBERTConfig(
        num_hidden_layers=layers, attn_implementation=backend, num_labels=2, max_length=max(length, 512)
    )
    model = NeoBERTForSequenceClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    rows = max(1, tokens // length)

    def train(input_ids, attention_mask) -> None:
        model.train()
        with autocast:
            loss = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                labels=torch.zeros(len(input_ids), dtype=torch.long),
            ).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.inference_mode()
    def forward(input_ids, attention_mask) -> None:
        model.eval()
        with autocast:
            model(input_ids=input_ids, attention_mask=attention_mask)

    train(*make_batch(2, 16, mixed=False))  # allocates gradients and optimiser state, warms the kernels up
    baseline = rss_gib()
    result = {"backend": backend, "length": length, "rows": rows}
    for name, step, mixed in (
        ("train", train, False),
        ("forward", forward, False),
        ("forward_mixed", forward, True),
        ("train_mixed", train, True),
    ):
        input_ids, attention_mask = make_batch(rows, length, mixed)
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            step(input_ids, attention_mask)
            seconds.append(time.perf_counter() - start)
        result[f"{name}_tokens_per_second"] = int(attention_mask.sum()) / min(seconds)
        if name == "train":
            result["train_extra_memory_gib"] = rss_gib() - baseline
    return result


def measure(backend: str, length: int, arguments) -> dict:
    """``measure_in_this_process`` in a fresh Python process, so that its peak memory is its own."""
    command = [
        sys.executable, "-m", "bench.forward_cpu", "--child", "--backends", backend, "--lengths", str(length),
        "--layers", str(arguments.layers), "--tokens", str(arguments.tokens),
        "--precision", arguments.precision, "--repeats", str(arguments.repeats),
        "--threads", str(arguments.threads or torch.get_num_threads()),
    ]  # fmt: skip
    # From the repository root, where the child finds the bench package whatever the working directory.
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPOSITORY)
    if completed.returncode != 0:
        raise RuntimeError(f"{backend} at {length} tokens failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def growth_ratios(rows: list[dict]) -> None:
    """Add, to each row, its extra training memory over that of the same backend at half the length."""
    by_key = {(row["backend"], row["length"]): row for row in rows}
    for row in rows:
        half = by_key.get((row["backend"], row["length"] // 2))
        if half and half["train_extra_memory_gib"] > 0:
            row["memory_growth_vs_half_length"] = (
                row["train_extra_memory_gib"] / half["train_extra_memory_gib"]
            )


COLUMNS = [
    ("backend", "backend", ""),
    ("length", "length", "d"),
    ("rows", "rows", "d"),
    ("forward_tokens_per_second", "forward tok/s", ",.0f"),
    ("train_tokens_per_second", "train tok/s", ",.0f"),
    ("forward_mixed_tokens_per_second", "fwd mixed tok/s", ",.0f"),
    ("train_mixed_tokens_per_second", "train mixed tok/s", ",.0f"),
    ("train_extra_memory_gib", "train extra GiB", ".2f"),
    ("memory_growth_vs_half_length", "× vs L/2", ".2f"),
]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096])
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    parser.add_argument("--layers", type=int, default=4, help="number of blocks (28 = NeoBERT base)")
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per batch (rows = tokens // length)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16: autocast")
    parser.add_argument("--repeats", type=int, default=2, help="timed passes per measurement (best kept)")
    parser.add_argument("--eager-max-length", type=int, default=2048, help="eager keeps L × L scores")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    arguments = parse_arguments()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    if arguments.child:
        result = measure_in_this_process(
            arguments.backends[0],
            arguments.lengths[0],
            arguments.layers,
            arguments.tokens,
            arguments.precision,
            arguments.repeats,
        )
        print(json.dumps(result))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {arguments.layers} × 768, "
        f"{arguments.precision}, {arguments.tokens} tokens per batch"
    )
    rows = []
    for backend in arguments.backends:
        for length in arguments.lengths:
            if backend == "eager" and length > arguments.eager_max_length:
                continue
            rows.append(measure(backend, length, arguments))
            print(f"  {backend} {length}: {rows[-1]['train_tokens_per_second']:,.0f} train tok/s", flush=True)
    growth_ratios(rows)
    print_table(rows, COLUMNS)
    write_json(arguments.json, {"settings": vars(arguments), "rows": rows})


if __name__ == "__main__":
    main()
