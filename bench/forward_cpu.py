"""Forward throughput of a base-size NeoBERT on this machine's CPU, per attention backend.

    python bench/forward_cpu.py [--lengths 128 512] [--batch 8] [--layers 28] [--json out.json]

Random weights of the official shape (28 × 768), fp32, inference mode. Two batches per length:
full rows, and rows of mixed lengths (uniform between length/4 and length) where the unpadded
``sdpa_varlen`` path skips the padding in the FFNs. Prints a table of real (non-padding) tokens/s.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from neobert_tasks.model import NeoBERTConfig, NeoBERTModel


def make_batch(batch: int, length: int, mixed: bool, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    lengths = [length] * batch
    if mixed:
        lengths = torch.randint(length // 4, length + 1, (batch,), generator=generator)
    lengths = [int(value) for value in lengths]
    lengths[0] = length  # the padded batch is always `length` wide
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, row_length in enumerate(lengths):
        input_ids[row, :row_length] = torch.randint(1, 30522, (row_length,), generator=generator)
        attention_mask[row, :row_length] = 1
    return input_ids, attention_mask


def measure(model, input_ids, attention_mask, repeats: int) -> float:
    with torch.inference_mode():
        model(input_ids=input_ids, attention_mask=attention_mask)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(input_ids=input_ids, attention_mask=attention_mask)
        elapsed = time.perf_counter() - start
    return repeats * int(attention_mask.sum()) / elapsed


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512], help="sequence lengths")
    parser.add_argument("--batch", type=int, default=8, help="rows per batch")
    parser.add_argument("--layers", type=int, default=28, help="number of blocks")
    parser.add_argument("--repeats", type=int, default=3, help="timed forward passes per setting")
    parser.add_argument("--backends", nargs="+", default=["eager", "sdpa", "sdpa_varlen"])
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.layers} × 768, fp32")
    print(f"{'backend':12s} {'length':>6s} {'batch':>10s} {'real tokens/s':>14s}")
    rows = []
    for backend in args.backends:
        torch.manual_seed(0)
        model = NeoBERTModel(NeoBERTConfig(num_hidden_layers=args.layers, attn_implementation=backend)).eval()
        for length in args.lengths:
            for mixed in (False, True):
                input_ids, attention_mask = make_batch(args.batch, length, mixed)
                speed = measure(model, input_ids, attention_mask, args.repeats)
                kind = "mixed" if mixed else "full"
                rows.append({"backend": backend, "length": length, "batch": kind, "tokens_per_s": speed})
                print(f"{backend:12s} {length:6d} {kind:>10s} {speed:14,.0f}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
