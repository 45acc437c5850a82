"""GPU check of the attention backends in bf16: agreement with eager, then speed, MFU and memory.

    python -m bench.gpu_check                       # base-size NeoBERT (28 × 768), random weights
    python -m bench.gpu_check --json gpu_check.json --steps 10
    python -m bench.gpu_check --backends sdpa flex --lengths 512

Checks, on one CUDA GPU, every backend of ``--backends`` (default: sdpa, sdpa_varlen, torch_varlen, flex,
flash_attention_2) that this machine runs; one it cannot run (flash-attn not installed, a torch without
varlen_attn) is left out with a line saying why:
1. agreement with eager in bf16 (bf16 weights): the max abs difference of the last hidden state on real
   tokens, on a right-padded batch of mixed lengths and on packed rows (position_ids restarting at 0);
2. the GPU's bf16 matmul peak (a big square matmul, timed in this run);
3. at lengths 512 and 4096, on full rows and on rows of mixed lengths (uniform in [L/8, L], the first one
   full; only real tokens count): forward tokens/s (bf16 weights) and training tokens/s (fp32 weights,
   bf16 autocast, fused AdamW, ``--tokens-per-batch`` tokens per step), each with its model FLOPs
   utilisation against that peak, and the peak memory of each (torch.cuda.max_memory_allocated).
flex compiles its kernels in the warm-up steps of its first measurements (tens of seconds); the whole
check is meant to take under 5 minutes. Prints the table, then forward tokens/s on full rows beside the
NeoBERT paper's A100 inference figures scaled by the ratio of the two GPUs' bf16 peaks; exits non-zero
when a backend differs from eager by more than ``--tolerance`` times the largest |eager| value or fails;
``--json`` also writes the rows.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.common import matmul_peak, model_flops, print_table, write_json
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification, NeoBERTModel
from neobert_tasks.model.attention import backend_problem

BACKENDS = ["sdpa", "sdpa_varlen", "torch_varlen", "flex", "flash_attention_2"]


def build(backend: str, layers: int, device: str, seed: int = 0) -> NeoBERTModel:
    torch.manual_seed(seed)
    config = NeoBERTConfig(num_hidden_layers=layers, attn_implementation=backend)
    with torch.device(device):  # initialised on the GPU: seconds less per measurement at the base shape
        model = NeoBERTModel(config)
    return model.to(torch.bfloat16).eval()


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def reset_peak_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float:
    """The GPU's peak allocation since the last reset; NaN on the CPU (``--device cpu`` checks the script)."""
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def free_cached_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


def mixed_batch(lengths: list[int], device: str, vocab: int = 30522) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1, vocab, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def packed_batch(documents: list[list[int]], device: str, vocab: int = 30522) -> dict[str, torch.Tensor]:
    """One row per list of document lengths (equal totals), position_ids restarting at each document."""
    batch = mixed_batch([sum(row) for row in documents], device, vocab)
    positions = [torch.cat([torch.arange(length) for length in row]) for row in documents]
    return {"input_ids": batch["input_ids"], "position_ids": torch.stack(positions).to(device)}


def agreement_batches(longest: int, device: str) -> dict[str, dict[str, torch.Tensor]]:
    """A right-padded batch of mixed lengths up to ``longest`` and two packed rows of ``longest / 2``
    tokens (at 4096: lengths 512, 300, 77, 4096 and 1000; documents 1000, 700, 300 and 48, and 2048)."""
    padded = [max(1, longest * share // 4096) for share in (512, 300, 77, 4096, 1000)]
    half = longest // 2
    documents = [half * share // 2048 for share in (1000, 700, 300)]
    return {
        "padded": mixed_batch(padded, device),
        "packed": packed_batch([[*documents, half - sum(documents)], [half]], device),
    }


def row_lengths(length: int, rows: int, mixed: bool) -> list[int]:
    """``rows`` rows of ``length`` tokens, or of lengths uniform in [length / 8, length] (first one full)."""
    if not mixed:
        return [length] * rows
    generator = torch.Generator().manual_seed(2)
    lengths = torch.randint(length // 8, length + 1, (rows,), generator=generator).tolist()
    return [length, *lengths[1:]]


def real_tokens(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()


@torch.no_grad()
def agreement(backends: list[str], layers: int, longest: int, device: str) -> dict[str, dict[str, float]]:
    """Max abs difference to eager on real tokens, per backend and batch, and eager's largest |value|."""
    batches = agreement_batches(longest, device)
    eager = build("eager", layers, device)
    expected = {name: eager(**batch).last_hidden_state.float() for name, batch in batches.items()}
    del eager
    real = {name: real_tokens(batch) for name, batch in batches.items()}
    results = {"scale": {name: expected[name][real[name]].abs().max().item() for name in batches}}
    for backend in backends:
        try:
            model = build(backend, layers, device)
            outputs = {name: model(**batch).last_hidden_state.float() for name, batch in batches.items()}
            results[backend] = {
                name: (outputs[name] - expected[name])[real[name]].abs().max().item() for name in batches
            }
        except Exception as error:  # never run on a GPU before: one backend's failure must not end the check
            print(f"{backend} failed: {type(error).__name__}: {error}", flush=True)
            results[backend] = {"error": f"{type(error).__name__}: {error}"}
        model = outputs = None
        free_cached_memory(device)
    return results


def timed(function, steps: int, device: str, warmup: int = 3) -> float:
    """Seconds per call of ``function`` after ``warmup`` calls, with the GPU synchronised."""
    for _ in range(warmup):
        function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def forward_measurement(backend: str, layers: int, lengths: list[int], steps: int, device: str) -> dict:
    model = build(backend, layers, device)
    batch = mixed_batch(lengths, device)
    reset_peak_memory(device)
    seconds = timed(lambda: model(**batch), steps, device)
    return {
        "tokens_per_second": sum(lengths) / seconds,
        "model_flops_per_second": model_flops(model.config, lengths, training=False) / seconds,
        "peak_memory_gib": peak_memory_gib(device),
    }


def training_measurement(backend: str, layers: int, lengths: list[int], steps: int, device: str) -> dict:
    """One optimiser step as fine-tuning runs it: fp32 weights, bf16 autocast, fused AdamW."""
    torch.manual_seed(0)
    config = NeoBERTConfig(num_hidden_layers=layers, attn_implementation=backend, num_labels=2)
    with torch.device(device):
        model = NeoBERTForSequenceClassification(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    batch = mixed_batch(lengths, device)
    labels = torch.zeros(len(lengths), dtype=torch.long, device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak_memory(device)
    seconds = timed(step, steps, device)
    return {
        "tokens_per_second": sum(lengths) / seconds,
        "model_flops_per_second": model_flops(config, lengths, training=True) / seconds,
        "peak_memory_gib": peak_memory_gib(device),
    }


def speed_rows(backends: list[str], arguments, peak: float) -> list[dict]:
    rows, device = [], arguments.device
    for backend in backends:
        for length in arguments.lengths:
            for mixed in (False, True):
                lengths = row_lengths(length, max(1, arguments.tokens_per_batch // length), mixed)
                forward = forward_measurement(backend, arguments.layers, lengths, arguments.steps, device)
                free_cached_memory(device)
                train = training_measurement(backend, arguments.layers, lengths, arguments.steps, device)
                free_cached_memory(device)
                rows.append(
                    {
                        "backend": backend,
                        "length": length,
                        "rows": "mixed" if mixed else "full",
                        "forward_tokens_per_second": forward["tokens_per_second"],
                        "forward_mfu": forward["model_flops_per_second"] / peak,
                        "forward_peak_memory_gib": forward["peak_memory_gib"],
                        "train_tokens_per_second": train["tokens_per_second"],
                        "mfu": train["model_flops_per_second"] / peak,
                        "peak_memory_gib": train["peak_memory_gib"],
                    }
                )
                row = rows[-1]
                print(
                    f"  {backend} {length} {row['rows']}: forward {row['forward_tokens_per_second']:,.0f}"
                    f" tok/s ({row['forward_mfu']:.1%}), train {row['train_tokens_per_second']:,.0f} tok/s"
                    f" ({row['mfu']:.1%}, {row['peak_memory_gib']:.1f} GiB)",
                    flush=True,
                )
    return rows


# NeoBERT paper, Table 10: inference tokens/s on an A100 (../shared/neobert/CHECKPOINT.md), by length.
PAPER_A100_TOKENS_PER_SECOND = {512: 24_500, 1024: 22_200, 2048: 20_500, 4096: 17_200, 8192: 13_000}
# Dense bf16 tensor-core peaks from the vendor's data sheets (SXM parts), TFLOP/s: the ratio of two GPUs'
# peaks scales the paper's A100 figures to this GPU. An unlisted GPU uses its peak measured in the run.
DATASHEET_BF16_TFLOPS = {"A100": 312, "H100": 989, "H200": 989}


def against_paper(rows: list[dict], peak: float, device: str) -> list[dict]:
    """Forward tokens/s on full rows beside the paper's A100 figure scaled to this GPU's peak."""
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    this_gpu = next((tflops for gpu, tflops in DATASHEET_BF16_TFLOPS.items() if gpu in name), peak / 1e12)
    scale = this_gpu / DATASHEET_BF16_TFLOPS["A100"]
    compared = []
    for row in rows:
        paper = PAPER_A100_TOKENS_PER_SECOND.get(row["length"])
        if row["rows"] == "full" and paper:
            ours = row["forward_tokens_per_second"]
            compared.append(
                {
                    "backend": row["backend"],
                    "length": row["length"],
                    "forward_tokens_per_second": ours,
                    "paper_a100": paper,
                    "paper_scaled": paper * scale,
                    "ratio": ours / (paper * scale),
                }
            )
    print(f"\ninference against the paper (A100 figures × {scale:.2f}, the ratio of the GPUs' bf16 peaks)")
    print_table(compared, PAPER_COLUMNS)
    return compared


PAPER_COLUMNS = [
    ("backend", "backend", ""),
    ("length", "length", "d"),
    ("forward_tokens_per_second", "forward tok/s", ",.0f"),
    ("paper_a100", "paper A100", ",.0f"),
    ("paper_scaled", "paper scaled", ",.0f"),
    ("ratio", "× paper", ".1f"),
]

COLUMNS = [
    ("backend", "backend", ""),
    ("length", "length", "d"),
    ("rows", "rows", ""),
    ("forward_tokens_per_second", "forward tok/s", ",.0f"),
    ("forward_mfu", "fwd MFU", ".1%"),
    ("forward_peak_memory_gib", "fwd GiB", ".1f"),
    ("train_tokens_per_second", "train tok/s", ",.0f"),
    ("mfu", "train MFU", ".1%"),
    ("peak_memory_gib", "train GiB", ".1f"),
]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--layers", type=int, default=28, help="number of blocks (28 = NeoBERT base)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS, metavar="BACKEND")
    parser.add_argument("--tokens-per-batch", type=int, default=32768, help="tokens per step (rows × length)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.1,
        help="largest allowed bf16 difference to eager, × max |eager|",
    )
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default="cuda",
        help="cpu runs the check's code at a small size (its figures mean nothing): a test, before a GPU day",
    )
    return parser.parse_args(argv)


def runnable(backends: list[str], device: str) -> list[str]:
    """The backends this machine runs; a line for each of the others."""
    kept = []
    for backend in backends:
        problem = backend_problem(backend, device, training=True)
        if problem:
            print(f"{backend} left out: {problem}")
        else:
            kept.append(backend)
    return kept


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    device = arguments.device
    if device == "cuda" and not torch.cuda.is_available():
        print("No CUDA GPU: bench.gpu_check needs one (on CPU, see bench.backend_agreement).")
        return 2
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (a check of the script)"
    print(f"Device: {name}  torch {torch.__version__}")
    torch.backends.cuda.matmul.allow_tf32 = True
    backends = runnable(arguments.backends, device)
    differences = agreement(backends, arguments.layers, max(arguments.lengths), device)
    scale = differences["scale"]
    print(
        "max |difference| to eager on real tokens, bf16 (max |eager|: "
        f"{scale['padded']:.3g} padded, {scale['packed']:.3g} packed)"
    )
    failures = 0
    for backend in [backend for backend in backends if "error" in differences[backend]]:
        failures += 1
        print(f"  {backend:18s} FAILED: {differences[backend]['error']}")
    backends = [backend for backend in backends if "error" not in differences[backend]]
    for backend in backends:
        padded, packed = differences[backend]["padded"], differences[backend]["packed"]
        failed = (
            padded > arguments.tolerance * scale["padded"] or packed > arguments.tolerance * scale["packed"]
        )
        failures += failed
        print(f"  {backend:18s} padded {padded:.4g}  packed {packed:.4g}{'  FAILED' if failed else ''}")
    size = 8192 if device == "cuda" else 256
    peak = matmul_peak(torch.bfloat16, device=device, sizes=(size,))
    print(f"bf16 matmul peak ({size}²): {peak / 1e12:,.3g} TFLOP/s\n")
    rows = []
    for backend in backends:
        try:
            rows.extend(speed_rows([backend], arguments, peak))
        except Exception as error:
            failures += 1
            print(f"{backend} speed FAILED: {type(error).__name__}: {error}", flush=True)
            free_cached_memory(device)
        # Written after each backend: a run cut short (time limit, out of memory) keeps what it measured.
        write_json(arguments.json, {"agreement": differences, "bf16_matmul_peak": peak, "rows": rows})
    print()
    print_table(rows, COLUMNS)
    paper = against_paper(rows, peak, device)
    payload = {"agreement": differences, "bf16_matmul_peak": peak, "rows": rows, "against_paper": paper}
    write_json(arguments.json, payload)
    print("FAILED" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
