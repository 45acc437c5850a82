"""How closely the attention backends, padding and packing agree, in fp32 on this machine.

    python -m bench.backend_agreement [--layers 28] [--lengths 128 77 300 5]

Builds a randomly initialised NeoBERT of the official width (28 × 768 by default) and prints the
largest absolute difference of ``last_hidden_state`` on real tokens between:
* each backend and ``sdpa`` on a right-padded batch of mixed lengths;
* each sequence in the padded batch and the same sequence run alone (padding invariance);
* documents packed in one row (``position_ids`` restarting at 0, and ``cu_seqlens``) and run alone.
"""

from __future__ import annotations

import argparse

import torch

from neobert_tasks.model import NeoBERTConfig, NeoBERTModel

BACKENDS = ("sdpa", "eager", "sdpa_varlen")


def batch_of(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randint(1, 30522, (length,), generator=generator) for length in lengths]
    input_ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask, sequences


@torch.inference_mode()
def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--layers", type=int, default=28, help="number of blocks")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 77, 300, 5], help="sequence lengths")
    return parser.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    input_ids, attention_mask, sequences = batch_of(args.lengths)
    real = attention_mask.bool()
    outputs, models = {}, {}
    for backend in BACKENDS:
        torch.manual_seed(0)
        config = NeoBERTConfig(num_hidden_layers=args.layers, attn_implementation=backend)
        models[backend] = NeoBERTModel(config).eval()
        outputs[backend] = models[backend](
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
    print(f"{args.layers} × 768, fp32, lengths {args.lengths}; max |difference| on real tokens")
    for backend in BACKENDS[1:]:
        difference = (outputs[backend][real] - outputs["sdpa"][real]).abs().max().item()
        print(f"  {backend:12s} vs sdpa (padded batch)          {difference:.2e}")
    for backend in BACKENDS:
        alone = [models[backend](input_ids=s[None]).last_hidden_state[0] for s in sequences]
        worst = max(
            (outputs[backend][row, : len(s)] - alone[row]).abs().max().item()
            for row, s in enumerate(sequences)
        )
        packed_ids = torch.cat(sequences)[None]
        positions = torch.cat([torch.arange(len(s)) for s in sequences])[None]
        packed = models[backend](input_ids=packed_ids, position_ids=positions).last_hidden_state[0]
        lengths = torch.tensor([0] + [len(s) for s in sequences])
        flat = models[backend](input_ids=packed_ids[0], cu_seqlens=lengths.cumsum(0).int()).last_hidden_state[
            0
        ]
        separate = torch.cat(alone)
        print(f"  {backend:12s} padded row vs alone               {worst:.2e}")
        print(
            f"  {backend:12s} packed (position_ids) vs alone    {(packed - separate).abs().max().item():.2e}"
        )
        print(f"  {backend:12s} packed (cu_seqlens) vs alone      {(flat - separate).abs().max().item():.2e}")
    print(f"  scale: max |last_hidden_state| = {outputs['sdpa'][real].abs().max().item():.2f}")


if __name__ == "__main__":
    main()
