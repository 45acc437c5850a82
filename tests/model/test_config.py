"""NeoBERTConfig reads the official config.json, and the full-size model has the official tensors."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoConfig

from neobert_tasks.model import NeoBERTConfig, NeoBERTForMaskedLM
from neobert_tasks.model.configuration import swiglu_width
from tests.conftest import shared_path
from tests.model.official import OFFICIAL_CONFIG


def test_defaults_are_the_official_values():
    config = NeoBERTConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (768, 28, 12)
    assert (config.dim_head, config.vocab_size, config.max_length) == (64, 30522, 4096)
    assert config.norm_eps == 1e-5
    assert config.pad_token_id == 0
    assert config.ffn_width == 2048
    assert config.max_position_embeddings == 4096


@pytest.mark.parametrize(("intermediate", "width"), [(3072, 2048), (96, 64), (100, 72), (1536, 1024)])
def test_swiglu_width_rounds_two_thirds_up_to_a_multiple_of_eight(intermediate, width):
    assert swiglu_width(intermediate) == width


def test_official_config_json_with_stray_keys(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(OFFICIAL_CONFIG))
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, NeoBERTConfig)
    assert config.ffn_width == 2048 and config.norm_eps == 1e-5
    for stray in ("kwargs", "pretrained_model_name_or_path", "trust_remote_code", "auto_map"):
        assert not hasattr(config, stray)
    # Saving writes no remote-code pointer and no stray key back.
    config.save_pretrained(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert "auto_map" not in saved and "kwargs" not in saved and "trust_remote_code" not in saved
    for key in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "dim_head",
        "intermediate_size",
        "max_length",
        "norm_eps",
        "vocab_size",
        "pad_token_id",
        "model_type",
    ):
        assert saved[key] == OFFICIAL_CONFIG[key]


def test_inconsistent_head_sizes_are_refused():
    with pytest.raises(ValueError, match="hidden_size 100 is not divisible"):
        NeoBERTConfig(hidden_size=100, num_attention_heads=12)


def test_full_size_model_on_meta_device_has_the_official_keys_and_shapes():
    tsv = shared_path("neobert", "state_dict_keys.tsv")
    expected = {}
    for line in tsv.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape = line.split("\t")
        expected[key] = tuple(int(size) for size in shape.split("x"))
    assert len(expected) == 172
    with torch.device("meta"):
        model = NeoBERTForMaskedLM(NeoBERTConfig())
    actual = {key: tuple(tensor.shape) for key, tensor in model.state_dict().items()}
    assert actual == expected
