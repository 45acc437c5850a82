"""Helpers shared by the benchmarks: model shapes, FLOP counts, the machine's matmul peak, tables, JSON.

FLOPs follow the usual convention (Kaplan et al., PaLM's MFU): a training step costs
``6 × matmul parameters × real tokens`` plus attention, ``12 × layers × hidden × Σ length²`` over the
sequences of the batch (forward only: 2 and 4 instead of 6 and 12). The matmul parameters are the
blocks' linear weights (``4·h² + 3·h·F`` per layer); the embedding is a lookup, not a matmul, and the
classification head's share is negligible, so neither is counted. Only real (non-padding) tokens
count, whatever the route computes on padding: model FLOPs utilisation (MFU) is then model FLOPs per
second over the machine's matmul peak, measured in the same process on a big square matmul in the same
precision.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils import benchmark

from neobert_tasks.model import NeoBERTConfig

# Model shapes the benchmarks accept by name: NeoBERT's own (28 × 768), a shallow one of the same width,
# and a tiny one whose steps are dominated by everything but the matmuls.
SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=2, intermediate_size=512),
    "small": dict(hidden_size=768, num_hidden_layers=6, num_attention_heads=12, intermediate_size=3072),
    "base": dict(hidden_size=768, num_hidden_layers=28, num_attention_heads=12, intermediate_size=3072),
}

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def shape_label(name: str) -> str:
    """``tiny (4 × 128)`` etc."""
    shape = SHAPES[name]
    return f"{name} ({shape['num_hidden_layers']} × {shape['hidden_size']})"


def matmul_parameters(config: NeoBERTConfig) -> int:
    """Weights of the blocks' linear layers (qkv, wo, w12, w3): the parameters each token is multiplied by."""
    hidden, width = config.hidden_size, config.ffn_width
    return config.num_hidden_layers * (4 * hidden * hidden + 3 * hidden * width)


def model_flops(config: NeoBERTConfig, lengths: Sequence[int], training: bool) -> float:
    """Model FLOPs of one pass over sequences of ``lengths`` real tokens (training: forward + backward)."""
    tokens = sum(lengths)
    squares = sum(length * length for length in lengths)
    dense, attention = (6, 12) if training else (2, 4)
    return dense * matmul_parameters(config) * tokens + attention * config.num_hidden_layers * (
        config.hidden_size * squares
    )


def matmul_peak(dtype: torch.dtype, device: str = "cpu", sizes: Sequence[int] = (2048, 4096)) -> float:
    """Best FLOP/s of a square ``n × n`` matmul over ``sizes``, timed with ``torch.utils.benchmark``."""
    best = 0.0
    for size in sizes:
        left = torch.randn(size, size, device=device).to(dtype)
        right = torch.randn(size, size, device=device).to(dtype)
        # Timer runs single-threaded unless told otherwise; the peak must use the threads training uses.
        timer = benchmark.Timer(
            "left @ right", globals={"left": left, "right": right}, num_threads=torch.get_num_threads()
        )
        seconds = timer.blocked_autorange(min_run_time=1.0).median
        best = max(best, 2 * size**3 / seconds)
    return best


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """Print ``rows`` as an aligned table; ``columns`` are (key, header, format spec)."""
    cells = [
        [format(row[key], spec) if row.get(key) is not None else "-" for key, _, spec in columns]
        for row in rows
    ]
    widths = [
        max([len(header)] + [len(line[i]) for line in cells]) for i, (_, header, _) in enumerate(columns)
    ]
    print("  ".join(header.rjust(width) for (_, header, _), width in zip(columns, widths, strict=True)))
    for line in cells:
        print("  ".join(cell.rjust(width) for cell, width in zip(line, widths, strict=True)), flush=True)


def write_json(path: str | None, payload: dict) -> None:
    """Write ``payload`` with the machine description to ``path`` (folders created), if a path is given."""
    if not path:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({"machine": machine(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")


def batches_of(indices: Iterable[int], batch_size: int) -> Iterator[list[int]]:
    """Cut an index stream into consecutive batches, the last one possibly shorter (as a DataLoader does)."""
    batch: list[int] = []
    for index in indices:
        batch.append(index)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def padding_fraction(
    lengths: Sequence[int],
    batch_indices_iterable: Iterable[Sequence[int]],
    pad_to_multiple_of: int | None = None,
) -> float:
    """Fraction of the token slots that are padding when each batch is padded to its longest example.

    Args:
        lengths: number of tokens of each example.
        batch_indices_iterable: the batches, each a sequence of example indices.
        pad_to_multiple_of: padded length is rounded up to a multiple of this (as the collator does).
    """
    multiple = pad_to_multiple_of or 1
    padded_slots = 0
    real_tokens = 0
    for batch in batch_indices_iterable:
        batch_lengths = [lengths[index] for index in batch]
        if not batch_lengths:
            continue
        padded_length = math.ceil(max(batch_lengths) / multiple) * multiple
        padded_slots += padded_length * len(batch_lengths)
        real_tokens += sum(batch_lengths)
    return (padded_slots - real_tokens) / padded_slots if padded_slots else 0.0
