"""Peak CPU memory and time of one training step of NeoBERT-base on one long sequence, with and without
activation (gradient) checkpointing.

Each setting runs in a fresh subprocess, so the reported peak resident set size (``ru_maxrss``) belongs to
that setting alone: torch's allocator keeps freed memory, and ``tracemalloc`` does not see torch's buffers
at all. One step is forward + backward + AdamW step of a randomly initialised, fp32
``NeoBERTForSequenceClassification`` (official sizes: 28 layers × 768) on one sequence, two labels.

    python -m bench.long_document_memory                       # 4096 tokens, both settings
    python -m bench.long_document_memory --sequence-length 1024 --num-layers 4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


def measure(sequence_length: int, num_layers: int, checkpointing: bool) -> dict[str, float]:
    """Run one training step in this process; return peak RSS (GiB), RSS before the step and its seconds."""
    import torch

    from neobert_tasks.model import NeoBERTForSequenceClassification
    from neobert_tasks.model.configuration import NeoBERTConfig

    torch.manual_seed(0)
    config = NeoBERTConfig(num_hidden_layers=num_layers, max_length=max(sequence_length, 4096), num_labels=2)
    model = NeoBERTForSequenceClassification(config)
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5)
    input_ids = torch.randint(1000, config.vocab_size, (1, sequence_length))
    attention_mask = torch.ones_like(input_ids)
    labels = torch.tensor([1])
    # A short forward and backward first, so that one-off kernel set-up is not timed as part of the step.
    model(input_ids=input_ids[:, :16], attention_mask=attention_mask[:, :16], labels=labels).loss.backward()
    model.zero_grad(set_to_none=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "peak_gib": peak / 2**20,
        "before_step_gib": before / 2**20,
        "seconds": seconds,
        "parameters_millions": sum(parameter.numel() for parameter in model.parameters()) / 1e6,
    }


def run_in_subprocess(sequence_length: int, num_layers: int, checkpointing: bool) -> dict[str, float]:
    """`measure` in a fresh Python process, so that its peak memory is its own."""
    command = [
        sys.executable, "-m", "bench.long_document_memory", "--child",
        "--sequence-length", str(sequence_length), "--num-layers", str(num_layers),
        *(["--checkpointing"] if checkpointing else []),
    ]  # fmt: skip
    # From the repository root, where the child finds the bench package whatever the working directory.
    completed = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPOSITORY)
    if completed.returncode != 0:
        raise RuntimeError(f"Measurement failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequence-length", type=int, default=4096)
    parser.add_argument("--num-layers", type=int, default=28)
    parser.add_argument("--checkpointing", action="store_true", help="(child only) enable checkpointing")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    arguments = parse_arguments()
    if arguments.child:
        print(json.dumps(measure(arguments.sequence_length, arguments.num_layers, arguments.checkpointing)))
        return
    print(
        f"NeoBERT {arguments.num_layers} × 768, fp32, CPU, one sequence of {arguments.sequence_length} tokens"
    )
    print(f"{'checkpointing':<15}{'peak RSS (GiB)':>16}{'model only (GiB)':>19}{'s/step':>9}")
    for checkpointing in (False, True):
        result = run_in_subprocess(arguments.sequence_length, arguments.num_layers, checkpointing)
        print(
            f"{'on' if checkpointing else 'off':<15}{result['peak_gib']:>16.2f}"
            f"{result['before_step_gib']:>19.2f}{result['seconds']:>9.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
