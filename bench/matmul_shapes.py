"""How fast this machine runs NeoBERT's own matmuls, against its big-square matmul peak.

    python -m bench.matmul_shapes                      # bf16 and fp32, 128 … 4096 tokens
    python -m bench.matmul_shapes --precisions bf16 --tokens 256 1024

A training step multiplies every token of the batch by the blocks' four weights (qkv 768 → 2304, wo
768 → 768, w12 768 → 4096, w3 2048 → 768 at the base width), three times: the forward product, the
input gradient and the weight gradient. This times exactly those products for a batch of ``tokens``
tokens and reports their FLOP/s as a fraction of the square-matmul peak that ``fine_tuning.py`` divides
by. Two things follow from the table:

* the ceiling on model FLOPs utilisation: even a step that did nothing but these matmuls reaches only
  this fraction of the peak at the batch sizes GLUE has (SST-2 batches of 32 hold 250–2,000 tokens);
* whether batching by a token budget would pay: with the same number of steps and tokens, equal-sized
  batches only beat the length-grouped ones if the cost per token grows with the batch. Here it falls
  (the fraction rises with ``tokens``), so the time of a step is concave in its tokens and uneven batches
  cost no more than equal ones.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils import benchmark

from bench.common import DTYPES, SHAPES, matmul_peak, print_table, write_json
from neobert_tasks.model import NeoBERTConfig


def block_weights(shape: str) -> dict[str, tuple[int, int]]:
    """``name → (in_features, out_features)`` of one block's linear layers at ``shape``."""
    config = NeoBERTConfig(**SHAPES[shape])
    hidden, width = config.hidden_size, config.ffn_width
    return {
        "qkv": (hidden, 3 * hidden),
        "wo": (hidden, hidden),
        "w12": (hidden, 2 * width),
        "w3": (width, hidden),
    }


def training_matmuls(tokens: int, weights: dict[str, tuple[int, int]], dtype: torch.dtype):
    """The operands of one block's forward, input-gradient and weight-gradient products, and their FLOPs."""
    products, flops = [], 0
    for fan_in, fan_out in weights.values():
        inputs = torch.randn(tokens, fan_in, dtype=dtype)
        weight = torch.randn(fan_in, fan_out, dtype=dtype)
        output_gradient = torch.randn(tokens, fan_out, dtype=dtype)
        products += [(inputs, weight), (output_gradient, weight.t()), (inputs.t(), output_gradient)]
        flops += 3 * 2 * tokens * fan_in * fan_out
    return products, flops


def measure(tokens: int, shape: str, dtype: torch.dtype) -> float:
    """FLOP/s of one block's training matmuls on ``tokens`` tokens (median of timed repeats)."""
    products, flops = training_matmuls(tokens, block_weights(shape), dtype)

    def run() -> None:
        for left, right in products:
            torch.mm(left, right)

    timer = benchmark.Timer(stmt="run()", globals={"run": run}, num_threads=torch.get_num_threads())
    return flops / timer.blocked_autorange(min_run_time=1.0).median


COLUMNS = [
    ("precision", "prec", ""),
    ("tokens", "tokens", "d"),
    ("gflops", "GFLOP/s", ",.0f"),
    ("fraction_of_peak", "of peak", ".1%"),
]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=sorted(DTYPES))
    parser.add_argument("--tokens", nargs="+", type=int, default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--shape", default="base", choices=sorted(SHAPES), help="block width (depth is moot)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", default="runs/bench/matmul_shapes.json")
    return parser.parse_args(argv)


def main() -> None:
    arguments = parse_arguments()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    rows = []
    for precision in arguments.precisions:
        dtype = DTYPES[precision]
        peak = matmul_peak(dtype)
        for tokens in arguments.tokens:
            speed = measure(tokens, arguments.shape, dtype)
            rows.append(
                {
                    "precision": precision,
                    "tokens": tokens,
                    "gflops": speed / 1e9,
                    "fraction_of_peak": speed / peak,
                }
            )
        peak = max(peak, matmul_peak(dtype))  # again after, as fine_tuning.py does: the better of the two
        for row in rows:
            if row["precision"] == precision:
                row["peak_gflops"], row["fraction_of_peak"] = peak / 1e9, row["gflops"] * 1e9 / peak
        print(f"{precision} square-matmul peak: {peak / 1e9:,.0f} GFLOP/s")
    print_table(rows, COLUMNS)
    write_json(arguments.json, {"settings": vars(arguments), "rows": rows})


if __name__ == "__main__":
    main()
