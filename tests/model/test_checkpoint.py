"""Loading the official checkpoint layout, the Auto classes, and save → load round trips."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification

from neobert_tasks.errors import ConfigError
from neobert_tasks.model import (
    NeoBERTForMaskedLM,
    NeoBERTForQuestionAnswering,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
)
from neobert_tasks.model.loading import build_model
from tests.model.official import write_official_checkpoint
from tests.model.reference import reference_last_hidden_state

TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96, vocab_size=1000)
HEAD_KEYS = {
    NeoBERTForSequenceClassification: {"dense.weight", "dense.bias", "classifier.weight", "classifier.bias"},
    NeoBERTForTokenClassification: {"classifier.weight", "classifier.bias"},
    NeoBERTForQuestionAnswering: {"qa_outputs.weight", "qa_outputs.bias"},
}


@pytest.fixture
def official(tmp_path):
    state = write_official_checkpoint(tmp_path / "neobert", **TINY)
    return tmp_path / "neobert", state


def _ids(length: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, 1000, (1, length), generator=torch.Generator().manual_seed(seed))


def test_mlm_checkpoint_loads_exactly_and_matches_the_reference_math(official):
    directory, state = official
    model, info = NeoBERTForMaskedLM.from_pretrained(directory, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    loaded = model.state_dict()
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    ids = _ids()
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state[0]
    expected = reference_last_hidden_state(state, ids[0], heads=4)
    # RoPE is computed from positions, so nothing is lost to transformers' meta-device loading.
    torch.testing.assert_close(hidden, expected, atol=1e-5, rtol=1e-5)
    logits = model(input_ids=ids).logits[0]
    torch.testing.assert_close(
        logits, expected @ state["decoder.weight"].T + state["decoder.bias"], atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("head_class", list(HEAD_KEYS))
def test_head_classes_report_only_their_new_parameters(official, head_class):
    directory, _ = official
    _, info = head_class.from_pretrained(directory, num_labels=3, output_loading_info=True)
    assert set(info["missing_keys"]) == HEAD_KEYS[head_class]
    # The MLM decoder of the official checkpoint is another head: leaving it behind is expected.
    assert not info["unexpected_keys"]


def test_auto_classes_load_the_official_directory_without_remote_code(official):
    directory, state = official
    backbone, info = AutoModel.from_pretrained(directory, output_loading_info=True)
    assert isinstance(backbone, NeoBERTModel)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert torch.equal(backbone.encoder.weight, state["model.encoder.weight"])
    classifier = AutoModelForSequenceClassification.from_pretrained(directory, num_labels=3)
    assert isinstance(classifier, NeoBERTForSequenceClassification)
    assert classifier.classifier.out_features == 3
    assert isinstance(AutoModelForMaskedLM.from_pretrained(directory), NeoBERTForMaskedLM)


def test_new_heads_are_initialised_from_classifier_init_range(official):
    directory, _ = official
    model = NeoBERTForSequenceClassification.from_pretrained(
        directory, num_labels=3, classifier_init_range=0.5
    )
    assert 0.3 < model.classifier.weight.std() < 0.7
    assert torch.count_nonzero(model.classifier.bias) == 0


def test_saved_classifier_keeps_official_keys_and_round_trips_bit_exact(official, tmp_path):
    directory, state = official
    model = NeoBERTForSequenceClassification.from_pretrained(directory, num_labels=3).eval()
    model.save_pretrained(tmp_path / "saved")
    saved_keys = set(load_file(str(tmp_path / "saved" / "model.safetensors")))
    official_backbone = {key for key in state if key.startswith("model.")}
    assert saved_keys == official_backbone | HEAD_KEYS[NeoBERTForSequenceClassification]
    saved_config = json.loads((tmp_path / "saved" / "config.json").read_text())
    for field in (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "dim_head",
        "intermediate_size",
        "max_length",
        "norm_eps",
        "vocab_size",
        "pad_token_id",
        "classifier_init_range",
    ):
        assert field in saved_config
    assert saved_config["model_type"] == "neobert" and len(saved_config["id2label"]) == 3
    reloaded = NeoBERTForSequenceClassification.from_pretrained(tmp_path / "saved").eval()
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    ids = _ids(20, seed=1)
    with torch.no_grad():
        # Equal weights; the CPU kernels may still round differently for tensors at other addresses.
        difference = (model(input_ids=ids).logits - reloaded(input_ids=ids).logits).abs().max()
    assert difference <= 1e-6, difference


def test_input_longer_than_max_length_is_refused_with_both_lengths(official):
    directory, _ = official
    model = NeoBERTModel.from_pretrained(directory, max_length=16)
    with pytest.raises(ValueError, match=r"length 17 is longer than this model's max_length 16"):
        model(input_ids=_ids(17))


def test_flash_attention_without_flash_attn_or_cuda_is_a_clear_error(official):
    directory, _ = official
    with pytest.raises((ImportError, RuntimeError, ValueError), match=r"(?i)flash"):
        model = NeoBERTModel.from_pretrained(directory, attn_implementation="flash_attention_2")
        model(input_ids=_ids())


def test_question_answering_loss_ignores_padding():
    from neobert_tasks.model import NeoBERTConfig

    torch.manual_seed(0)
    model = NeoBERTForQuestionAnswering(NeoBERTConfig(**TINY)).eval()
    ids = _ids(10)
    positions = {"start_positions": torch.tensor([3]), "end_positions": torch.tensor([5])}
    alone = model(input_ids=ids, **positions).loss
    padded_ids = torch.cat([ids, torch.zeros(1, 6, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 10), torch.zeros(1, 6)], dim=1).long()
    padded = model(input_ids=padded_ids, attention_mask=mask, **positions).loss
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------------
# Folders whose weights do not fit their config.json: transformers started missing backbone weights from
# random values and dropped extra ones, with a table among the head's expected rows (or none, for a new
# classifier), and refused a wrong shape with a pointer to that table.


def rewrite_official(
    directory, drop: str | None = None, reshape: str | None = None, **config_changes
) -> None:
    """Change the official-layout folder in place: drop or reshape one weight, change config.json fields."""
    from safetensors.torch import save_file

    state = load_file(directory / "model.safetensors")
    if drop:
        del state[drop]
    if reshape:
        state[reshape] = torch.zeros(7, state[reshape].shape[1])
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **config_changes}))


@pytest.mark.parametrize("head_class", [NeoBERTForSequenceClassification, NeoBERTModel])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            dict(drop="model.transformer_encoder.1.wo.weight"),
            r" lacks backbone weights its config.json \(2 layers\) calls for:"
            r" (model\.)?transformer_encoder\.1\.wo\.weight; they would start from random values\.$",
        ),
        (
            dict(num_hidden_layers=3),
            r" lacks backbone weights its config.json \(3 layers\) calls for: .*transformer_encoder\.2\."
            r"attention_norm\.weight, .* and 3 more; they would",
        ),
        (
            dict(num_hidden_layers=1),
            r" holds backbone weights its config.json \(1 layer\) has no place for:"
            r" model\.transformer_encoder\.1\..* and 3 more; they would be dropped"
            r" \(is num_hidden_layers right\?\)\.$",
        ),
        (
            dict(reshape="model.transformer_encoder.0.qkv.weight"),
            r": weight model\.transformer_encoder\.0\.qkv\.weight has shape 7×64 where its config.json makes"
            r" 192×64; the weights and config.json come from different models\.$",
        ),
    ],
)
def test_weights_that_do_not_fit_their_config_are_refused_by_name(official, head_class, change, message):
    directory, _ = official
    rewrite_official(directory, **change)
    extra = {"num_labels": 2} if head_class is NeoBERTForSequenceClassification else {}
    with pytest.raises(ConfigError, match=rf"^model\.init_args\.pretrained '{directory}'{message}"):
        build_model(head_class, str(directory), None, **extra)


def test_a_folder_without_config_json_is_refused_in_one_sentence(official):
    directory, _ = official
    (directory / "config.json").unlink()
    with pytest.raises(
        ConfigError, match=r"has no config\.json, which gives the model's shape; copy the one"
    ):
        build_model(NeoBERTModel, str(directory), None)


def test_a_new_classifier_does_not_hide_a_missing_backbone_weight(official, tmp_path):
    """A checkpoint with a classifier of another size loads with its head started afresh; a backbone weight
    it lacks is still refused (the load report was silenced for the new head)."""
    directory, _ = official
    ner = NeoBERTForTokenClassification.from_pretrained(directory, num_labels=9)
    ner.save_pretrained(tmp_path / "ner")
    rewrite_official(tmp_path / "ner", drop="model.transformer_encoder.0.qkv.weight")
    with (
        pytest.warns(UserWarning, match="classifier for 9 labels"),
        pytest.raises(ConfigError, match=r"lacks backbone weights .*: model\.transformer_encoder\.0\.qkv"),
    ):
        build_model(NeoBERTForTokenClassification, str(tmp_path / "ner"), None, num_labels=3)


def test_a_new_classifier_does_not_hide_a_backbone_weight_of_another_shape(official, tmp_path):
    """A new classifier makes transformers re-initialise every weight of another shape, backbone included."""
    directory, _ = official
    NeoBERTForTokenClassification.from_pretrained(directory, num_labels=9).save_pretrained(tmp_path / "ner")
    rewrite_official(tmp_path / "ner", reshape="model.transformer_encoder.0.qkv.weight")
    wrong_shape = r": weight model\.transformer_encoder\.0\.qkv\.weight has shape 7×64 where its config\.json"
    with (
        pytest.warns(UserWarning, match="classifier for 9 labels"),
        pytest.raises(ConfigError, match=wrong_shape),
    ):
        build_model(NeoBERTForTokenClassification, str(tmp_path / "ner"), None, num_labels=3)
