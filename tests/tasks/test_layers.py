"""Layer numbering, layer-wise learning-rate decay and freezing, on NeoBERT's own parameter names."""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.errors import ConfigError
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification
from neobert_tasks.tasks.layers import freeze, layer_index, layer_scales, parameter_counts
from neobert_tasks.tasks.optim import build_optimizer, parameter_groups
from tests.conftest import shared_path

TINY = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 48}


def classifier() -> NeoBERTForSequenceClassification:
    return NeoBERTForSequenceClassification(NeoBERTConfig(**TINY, vocab_size=50, num_labels=2))


def test_official_checkpoint_keys_are_numbered_embedding_blocks_top():
    keys = [
        line.split("\t")[0]
        for line in shared_path("neobert", "state_dict_keys.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    indices = {key: layer_index(key, 28) for key in keys}
    assert indices["model.encoder.weight"] == 0
    assert indices["model.transformer_encoder.0.qkv.weight"] == 1
    assert indices["model.transformer_encoder.27.ffn.w3.weight"] == 28
    assert indices["model.layer_norm.weight"] == indices["decoder.weight"] == 29
    # A PeftModel's longer names number the same.
    assert layer_index("base_model.model.model.transformer_encoder.4.qkv.lora_A.default.weight", 28) == 5
    assert layer_index("base_model.model.model.encoder.weight", 28) == 0


def test_layer_decay_scales_each_layer_below_the_head():
    assert layer_scales(None, 2) == [1.0, 1.0, 1.0, 1.0]
    assert layer_scales(0.5, 2) == [0.125, 0.25, 0.5, 1.0]
    model = classifier()
    optimizer = build_optimizer(model, learning_rate=1e-3, weight_decay=0.01, layer_decay=0.5, num_layers=3)
    rates = {group["name"]: group["lr"] for group in optimizer.param_groups}
    assert rates["layer_0_decay"] == pytest.approx(1e-3 * 0.5**4)  # the embedding
    assert rates["layer_1_decay"] == rates["layer_1_no_decay"] == pytest.approx(1e-3 * 0.5**3)
    assert rates["layer_4_decay"] == pytest.approx(1e-3)  # the head
    assert "layer_0_no_decay" not in rates  # the embedding has no norm or bias: no empty group
    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter once
    for group in optimizer.param_groups:
        assert group["weight_decay"] == (
            0.01 if group["name"].endswith("_decay") and "no_decay" not in group["name"] else 0.0
        )


def test_without_layer_decay_the_groups_are_unchanged():
    groups = parameter_groups(classifier(), 0.1)
    assert [group["name"] for group in groups] == ["decay", "no_decay"]
    assert [group["lr_scale"] for group in groups] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("options", "frozen_names"),
    [
        ({"embeddings": True}, ["model.encoder.weight"]),
        ({"first_layers": 2}, ["model.transformer_encoder.0.", "model.transformer_encoder.1."]),
        ({"backbone": True}, ["model."]),
    ],
)
def test_freezing(options, frozen_names):
    model = classifier()
    arguments = {"embeddings": False, "first_layers": 0, "backbone": False, **options}
    frozen = freeze(model, 3, **arguments)
    for name, parameter in model.named_parameters():
        expected_frozen = any(name.startswith(prefix) for prefix in frozen_names)
        assert parameter.requires_grad is not expected_frozen, name
    trainable, total = parameter_counts(model)
    assert total - trainable == frozen > 0


def test_freezing_more_layers_than_the_model_has_is_refused():
    with pytest.raises(ConfigError, match=r"freeze_layers must be in \[0, 3\] \(the model's blocks\), got 4"):
        freeze(classifier(), 3, embeddings=False, first_layers=4, backbone=False)


def test_another_optimizer_gets_the_groups_rates_and_decay():
    model = classifier()
    optimizer = build_optimizer(
        model, 1e-2, 0.05, optimizer_factory=lambda groups: torch.optim.SGD(groups, lr=99.0, momentum=0.9)
    )
    assert type(optimizer) is torch.optim.SGD
    assert [(group["lr"], group["weight_decay"], group["momentum"]) for group in optimizer.param_groups] == [
        (1e-2, 0.05, 0.9),
        (1e-2, 0.0, 0.9),
    ]


def test_freezing_a_task_without_a_head_is_refused():
    """An embedding task is its backbone: freeze_backbone froze it all, and the optimiser said only that the
    model had no trainable parameters, naming no option."""
    from neobert_tasks.tasks import EmbeddingTask  # noqa: PLC0415

    with pytest.raises(ConfigError, match=r"^model.init_args.freeze_backbone .* leaves EmbeddingTask"):
        EmbeddingTask(pretrained=None, model_config={**TINY, "vocab_size": 50}, freeze_backbone=True)


def test_layer_decay_with_a_frozen_backbone_is_warned_of():
    """Only the head trains, at the full rate: the decay was accepted and did nothing, without a word."""
    from neobert_tasks.tasks import SequenceClassificationTask

    options = dict(pretrained=None, model_config={**TINY, "vocab_size": 50}, num_labels=2)
    with pytest.warns(UserWarning, match=r"^model.init_args.layer_decay 0.8 has nothing to scale with"):
        SequenceClassificationTask(**options, freeze_backbone=True, layer_decay=0.8)
