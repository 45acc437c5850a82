"""ONNX export of a NeoBERT classifier: export time, file size, and onnxruntime against PyTorch on the CPU.

    python -m bench.onnx_export --shape base --batch_sizes 1 32 --length 128 --json bench/results/onnx.json

A randomly initialised ``NeoBERTForSequenceClassification`` of the given shape is exported the way
``--export.formats [onnx]`` does (``neobert_tasks.export.graph.save_onnx``: ``torch.export`` then the ONNX
translation, then the onnxruntime check). Latency is one forward pass of a full batch (no padding) of
``length`` tokens, timed in alternating rounds of PyTorch (eager, ``inference_mode``, sdpa) and onnxruntime
(CPU provider, graph optimisations on), both with the same number of threads, so that both routes see the
same machine conditions; the median over rounds is reported. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from bench.common import SHAPES, machine, print_table, shape_label, write_json
from neobert_tasks.export.graph import save_onnx
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="base", choices=sorted(SHAPES))
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per batch size")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", help="write the results here")
    return parser.parse_args(argv)


def timed(function, repeats: int) -> float:
    """Median seconds of ``repeats`` calls, after one untimed call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def latencies(model, session, batch_size: int, length: int, rounds: int) -> tuple[float, float]:
    """Median seconds per forward pass of PyTorch and onnxruntime, measured in alternating rounds."""
    generator = torch.Generator().manual_seed(batch_size)
    input_ids = torch.randint(1000, model.config.vocab_size, (batch_size, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    feeds = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}

    def torch_forward():
        with torch.inference_mode():
            model(input_ids=input_ids, attention_mask=attention_mask)

    def ort_forward():
        session.run(None, feeds)

    repeats = 3 if batch_size >= 16 else 10
    torch_times, ort_times = [], []
    for _ in range(rounds):
        torch_times.append(timed(torch_forward, repeats))
        ort_times.append(timed(ort_forward, repeats))
    return statistics.median(torch_times), statistics.median(ort_times)


def main() -> None:
    arguments = parse_arguments()
    torch.set_num_threads(arguments.threads)
    torch.manual_seed(0)
    config = NeoBERTConfig(**SHAPES[arguments.shape], num_labels=2)
    model = NeoBERTForSequenceClassification(config).eval()
    with tempfile.TemporaryDirectory() as directory:
        start = time.perf_counter()
        path, difference = save_onnx(model, directory)
        export_seconds = time.perf_counter() - start
        size = sum(file.stat().st_size for file in Path(directory).glob("model.onnx*"))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = arguments.threads
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        rows = []
        for batch_size in arguments.batch_sizes:
            torch_seconds, ort_seconds = latencies(
                model, session, batch_size, arguments.length, arguments.rounds
            )
            rows.append(
                {
                    "batch_size": batch_size,
                    "length": arguments.length,
                    "torch_ms": 1000 * torch_seconds,
                    "onnxruntime_ms": 1000 * ort_seconds,
                    "speedup": torch_seconds / ort_seconds,
                }
            )
    print(f"{shape_label(arguments.shape)}, {arguments.threads} threads, {machine()['cpu']}")
    print(f"export (torch.export, ONNX, onnxruntime check): {export_seconds:.1f} s, {size / 2**20:.1f} MiB")
    print(f"largest difference to PyTorch on the check batch: {difference:.2e}")
    print_table(
        rows,
        [
            ("batch_size", "batch", "d"),
            ("length", "length", "d"),
            ("torch_ms", "PyTorch ms", ".1f"),
            ("onnxruntime_ms", "onnxruntime ms", ".1f"),
            ("speedup", "onnxruntime speed-up", ".2f"),
        ],
    )
    write_json(
        arguments.json,
        {
            "shape": arguments.shape,
            "threads": arguments.threads,
            "export_seconds": export_seconds,
            "onnx_bytes": size,
            "max_difference": difference,
            "latency": rows,
        },
    )


if __name__ == "__main__":
    main()
