"""Writers of checkpoint directories in the official ``chandar-lab/NeoBERT`` layout, for the tests.

The official ``config.json`` is reproduced field for field (``../shared/neobert/CHECKPOINT.md``),
including its ``auto_map`` to remote code and the stray keys some published copies carry.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

OFFICIAL_CONFIG = {
    "architectures": ["NeoBERTLMHead"],
    "auto_map": {
        "AutoConfig": "model.NeoBERTConfig",
        "AutoModel": "model.NeoBERT",
        "AutoModelForMaskedLM": "model.NeoBERTLMHead",
        "AutoModelForSequenceClassification": "model.NeoBERTForSequenceClassification",
    },
    "decoder_init_range": 0.02,
    "dim_head": 64,
    "embedding_init_range": 0.02,
    "classifier_init_range": 0.02,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "kwargs": {
        "classifier_init_range": 0.02,
        "pretrained_model_name_or_path": "google-bert/bert-base-uncased",
    },
    "max_length": 4096,
    "model_type": "neobert",
    "norm_eps": 1e-05,
    "num_attention_heads": 12,
    "num_hidden_layers": 28,
    "pad_token_id": 0,
    "pretrained_model_name_or_path": "google-bert/bert-base-uncased",
    "torch_dtype": "float32",
    "transformers_version": "4.48.2",
    "trust_remote_code": True,
    "vocab_size": 30522,
}


def official_shapes(hidden: int, layers: int, vocab: int, ffn_width: int) -> dict[str, tuple[int, ...]]:
    """Every tensor of the official MLM checkpoint with its shape, for any model size."""
    shapes = {"model.encoder.weight": (vocab, hidden)}
    for index in range(layers):
        prefix = f"model.transformer_encoder.{index}."
        shapes[prefix + "attention_norm.weight"] = (hidden,)
        shapes[prefix + "qkv.weight"] = (3 * hidden, hidden)
        shapes[prefix + "wo.weight"] = (hidden, hidden)
        shapes[prefix + "ffn_norm.weight"] = (hidden,)
        shapes[prefix + "ffn.w12.weight"] = (2 * ffn_width, hidden)
        shapes[prefix + "ffn.w3.weight"] = (hidden, ffn_width)
    shapes["model.layer_norm.weight"] = (hidden,)
    shapes["decoder.weight"] = (vocab, hidden)
    shapes["decoder.bias"] = (vocab,)
    return shapes


def write_official_checkpoint(directory: Path, seed: int = 0, **config_overrides) -> dict[str, torch.Tensor]:
    """Write ``config.json`` + ``model.safetensors`` with random weights; return the state dict."""
    config = dict(OFFICIAL_CONFIG, **config_overrides)
    config["dim_head"] = config["hidden_size"] // config["num_attention_heads"]
    width = int(2 * config["intermediate_size"] / 3)
    width = 8 * ((width + 7) // 8)
    shapes = official_shapes(config["hidden_size"], config["num_hidden_layers"], config["vocab_size"], width)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("norm.weight"):
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            state[key] = 0.05 * torch.randn(shape, generator=generator)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    return state
