"""GPU check of the attention backends: flash_attention_2 against sdpa in bf16, then speed and MFU.

    python -m bench.gpu_check                       # base-size NeoBERT (28 × 768), random weights
    python -m bench.gpu_check --json gpu_check.json --steps 10

Checks, on one CUDA GPU in a few minutes (100 s on an H200 without flash-attn):
1. flash_attention_2 (unpad → flash_attn_varlen_func → re-pad) agrees with sdpa on a right-padded
   batch of mixed lengths in bf16 (max abs difference of the last hidden state on real tokens), and
   packed input (cu_seqlens) through flash equals the padded batch;
2. the GPU's bf16 matmul peak (a big square matmul, timed in this run);
3. for each backend available (sdpa, sdpa_varlen, flash_attention_2) at lengths 512 and 4096: forward
   tokens/s in bf16, and training tokens/s (fp32 weights, bf16 autocast, fused AdamW, batches of
   ``--tokens-per-batch`` tokens) with its model FLOPs utilisation against that peak, on full rows and
   on rows of mixed lengths (a quarter to all of the length) where only real tokens count.
Without flash-attn the agreement check is skipped and the table has the other backends only.
Prints one table; exits non-zero when a check fails; ``--json`` also writes the rows.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from bench.common import matmul_peak, model_flops, print_table, write_json
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification, NeoBERTModel


def flash_attn_version() -> str | None:
    try:
        import flash_attn
    except ImportError:
        return None
    return flash_attn.__version__


def build(backend: str, layers: int, seed: int = 0) -> NeoBERTModel:
    torch.manual_seed(seed)
    config = NeoBERTConfig(num_hidden_layers=layers, attn_implementation=backend)
    return NeoBERTModel(config).to("cuda", torch.bfloat16).eval()


def mixed_batch(lengths: list[int], vocab: int = 30522) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1, vocab, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids.cuda(), attention_mask.cuda()


def row_lengths(length: int, rows: int, mixed: bool) -> list[int]:
    """``rows`` rows of ``length`` tokens, or of lengths between a quarter and all of it (first one full)."""
    if not mixed:
        return [length] * rows
    generator = torch.Generator().manual_seed(2)
    lengths = torch.randint(length // 4, length + 1, (rows,), generator=generator).tolist()
    return [length, *lengths[1:]]


@torch.no_grad()
def agreement(layers: int) -> dict[str, float]:
    input_ids, attention_mask = mixed_batch([512, 300, 77, 4096, 1000])
    sdpa = build("sdpa", layers)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    flash_model = build("flash_attention_2", layers)
    flash = flash_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.bool()
    lengths = attention_mask.sum(1)
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    packed = flash_model(input_ids=input_ids[mask], cu_seqlens=cu_seqlens).last_hidden_state[0]
    return {
        "flash_vs_sdpa_max_abs": (flash[mask].float() - sdpa[mask].float()).abs().max().item(),
        "sdpa_scale_max_abs": sdpa[mask].float().abs().max().item(),
        "packed_vs_padded_flash_max_abs": (packed.float() - flash[mask].float()).abs().max().item(),
    }


def timed(function, steps: int, warmup: int = 3) -> float:
    """Seconds per call of ``function`` after ``warmup`` calls, with the GPU synchronised."""
    for _ in range(warmup):
        function()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def forward_tokens_per_second(backend: str, layers: int, length: int, tokens: int, steps: int) -> float:
    model = build(backend, layers)
    input_ids, attention_mask = mixed_batch([length] * max(1, tokens // length))
    seconds = timed(lambda: model(input_ids=input_ids, attention_mask=attention_mask), steps)
    return int(attention_mask.sum()) / seconds


def training_measurement(
    backend: str, layers: int, length: int, tokens: int, mixed: bool, steps: int
) -> dict:
    """One optimiser step as fine-tuning runs it: fp32 weights, bf16 autocast, fused AdamW."""
    torch.manual_seed(0)
    config = NeoBERTConfig(num_hidden_layers=layers, attn_implementation=backend, num_labels=2)
    model = NeoBERTForSequenceClassification(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    lengths = row_lengths(length, max(1, tokens // length), mixed)
    input_ids, attention_mask = mixed_batch(lengths)
    labels = torch.zeros(len(lengths), dtype=torch.long, device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    seconds = timed(step, steps)
    peak_memory = torch.cuda.max_memory_allocated()
    return {
        "tokens_per_second": sum(lengths) / seconds,
        "model_flops_per_second": model_flops(config, lengths, training=True) / seconds,
        "peak_memory_gib": peak_memory / 2**30,
    }


def speed_rows(backends: list[str], arguments, peak: float) -> list[dict]:
    rows = []
    for backend in backends:
        for length in arguments.lengths:
            forward = forward_tokens_per_second(
                backend, arguments.layers, length, arguments.tokens_per_batch, arguments.steps
            )
            for mixed in (False, True):
                result = training_measurement(
                    backend, arguments.layers, length, arguments.tokens_per_batch, mixed, arguments.steps
                )
                rows.append(
                    {
                        "backend": backend,
                        "length": length,
                        "rows": "mixed" if mixed else "full",
                        "forward_tokens_per_second": forward if not mixed else None,
                        "train_tokens_per_second": result["tokens_per_second"],
                        "mfu": result["model_flops_per_second"] / peak,
                        "peak_memory_gib": result["peak_memory_gib"],
                    }
                )
                speed = result["tokens_per_second"]
                print(f"  {backend} {length} {rows[-1]['rows']}: {speed:,.0f} train tok/s", flush=True)
            torch.cuda.empty_cache()
    return rows


COLUMNS = [
    ("backend", "backend", ""),
    ("length", "length", "d"),
    ("rows", "rows", ""),
    ("forward_tokens_per_second", "forward tok/s", ",.0f"),
    ("train_tokens_per_second", "train tok/s", ",.0f"),
    ("mfu", "train MFU", ".1%"),
    ("peak_memory_gib", "peak GiB", ".1f"),
]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--layers", type=int, default=28, help="number of blocks (28 = NeoBERT base)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--tokens-per-batch", type=int, default=32768, help="tokens per step (rows × length)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--tolerance", type=float, default=0.1, help="largest allowed bf16 difference")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser.parse_args(argv)


def main() -> int:
    arguments = parse_arguments()
    if not torch.cuda.is_available():
        print("No CUDA GPU: this check needs one.")
        return 2
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    torch.backends.cuda.matmul.allow_tf32 = True
    failures, differences = 0, {}
    version = flash_attn_version()
    backends = ["sdpa", "sdpa_varlen"]
    if version is None:
        print("flash-attn is not installed: agreement check skipped, sdpa and sdpa_varlen timed")
    else:
        print(f"flash-attn {version}")
        differences = agreement(arguments.layers)
        for name, value in differences.items():
            print(f"{name:34s} {value:.4g}")
        failures += differences["flash_vs_sdpa_max_abs"] > arguments.tolerance
        failures += differences["packed_vs_padded_flash_max_abs"] > arguments.tolerance
        backends.append("flash_attention_2")
    peak = matmul_peak(torch.bfloat16, device="cuda", sizes=(8192,))
    print(f"bf16 matmul peak (8192²): {peak / 1e12:,.0f} TFLOP/s\n")
    rows = speed_rows(backends, arguments, peak)
    print()
    print_table(rows, COLUMNS)
    print("FAILED" if failures else "OK")
    write_json(
        arguments.json,
        {"flash_attn": version, "agreement": differences, "bf16_matmul_peak": peak, "rows": rows},
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
