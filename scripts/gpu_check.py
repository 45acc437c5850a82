"""GPU check of the attention backends: flash_attention_2 against sdpa in bf16, and forward speed.

    python scripts/gpu_check.py            # base-size NeoBERT (28 × 768), random weights

Checks, on one CUDA GPU in under 5 minutes:
1. flash_attention_2 (unpad → flash_attn_varlen_func → re-pad) agrees with sdpa on a right-padded
   batch of mixed lengths in bf16 (max abs difference of the last hidden state on real tokens);
2. packed input (cu_seqlens) through flash equals the padded batch;
3. forward tokens/s at lengths 512 and 4096 for each backend available, in bf16.
Prints one table; exits non-zero when a check fails.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from neobert_tasks.model import NeoBERTConfig, NeoBERTModel


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


@torch.no_grad()
def tokens_per_second(backend: str, layers: int, length: int, tokens_per_batch: int = 32768) -> float:
    model = build(backend, layers)
    batch = max(1, tokens_per_batch // length)
    input_ids, attention_mask = mixed_batch([length] * batch)
    for _ in range(3):
        model(input_ids=input_ids, attention_mask=attention_mask)
    torch.cuda.synchronize()
    steps, start = 10, time.perf_counter()
    for _ in range(steps):
        model(input_ids=input_ids, attention_mask=attention_mask)
    torch.cuda.synchronize()
    return steps * batch * length / (time.perf_counter() - start)


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--layers", type=int, default=28, help="number of blocks (28 = NeoBERT base)")
    parser.add_argument("--tolerance", type=float, default=0.1, help="largest allowed bf16 difference")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("No CUDA GPU: this check needs one.")
        return 2
    print(f"GPU: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    failures = 0
    try:
        import flash_attn

        print(f"flash-attn {flash_attn.__version__}")
        differences = agreement(args.layers)
        for name, value in differences.items():
            print(f"{name:34s} {value:.4g}")
        failures += differences["flash_vs_sdpa_max_abs"] > args.tolerance
        failures += differences["packed_vs_padded_flash_max_abs"] > args.tolerance
        backends = ["sdpa", "flash_attention_2"]
    except ImportError:
        print("flash-attn is not installed: only sdpa is timed")
        backends = ["sdpa"]
    print(f"\n{'backend':20s} {'length':>7s} {'forward tokens/s (bf16)':>24s}")
    for backend in backends:
        for length in (512, 4096):
            print(f"{backend:20s} {length:7d} {tokens_per_second(backend, args.layers, length):24,.0f}")
    print("FAILED" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
