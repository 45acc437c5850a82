"""Which layer a parameter belongs to, for layer-wise learning rates and freezing.

Layers are numbered as ELECTRA and DeBERTa number them for layer-wise learning-rate decay: 0 is the token
embedding, 1..L the transformer blocks, L + 1 everything above them (the final norm and the task head),
so the head trains at the full rate and each layer below it at ``layer_decay`` times the one above.
Names are matched wherever they sit, so a ``PeftModel``'s longer names number the same.
"""

from __future__ import annotations

import re

import torch

from neobert_tasks.errors import ConfigError

_BLOCK = re.compile(r"(?:^|\.)transformer_encoder\.(\d+)\.")
# The token embedding (``transformer_encoder.`` has no dot before ``encoder.``).
_EMBEDDING = re.compile(r"(?:^|\.)encoder\.")


def layer_index(parameter_name: str, num_layers: int) -> int:
    """0 for the embedding, 1 + i for block i, ``num_layers + 1`` for the final norm and the head."""
    block = _BLOCK.search(parameter_name)
    if block:
        return int(block.group(1)) + 1
    if _EMBEDDING.search(parameter_name):
        return 0
    return num_layers + 1


def layer_scales(layer_decay: float | None, num_layers: int) -> list[float]:
    """Learning-rate multiplier of each layer index: ``layer_decay ** (num_layers + 1 - index)``."""
    if layer_decay is None:
        return [1.0] * (num_layers + 2)
    return [layer_decay ** (num_layers + 1 - index) for index in range(num_layers + 2)]


def freeze(
    model: torch.nn.Module, num_layers: int, embeddings: bool, first_layers: int, backbone: bool
) -> int:
    """Stop gradients to the embedding, the first ``first_layers`` blocks or the whole backbone (every
    parameter below the head); returns how many parameters were frozen."""
    if not 0 <= first_layers <= num_layers:
        raise ConfigError(
            f"model.init_args.freeze_layers must be in [0, {num_layers}] (the model's blocks),"
            f" got {first_layers}."
        )
    frozen = 0
    for name, parameter in model.named_parameters():
        index = layer_index(name, num_layers)
        below_head = index <= num_layers or name.split(".")[-2:-1] == ["layer_norm"]
        if (embeddings and index == 0) or (0 < index <= first_layers) or (backbone and below_head):
            frozen += parameter.numel() if parameter.requires_grad else 0
            parameter.requires_grad_(False)
    return frozen


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters, a tied parameter counted once."""
    parameters = list(model.parameters())
    trainable = sum(parameter.numel() for parameter in parameters if parameter.requires_grad)
    return trainable, sum(parameter.numel() for parameter in parameters)
