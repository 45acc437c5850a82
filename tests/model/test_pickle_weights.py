"""``pretrained`` folders load from safetensors only: pickle weights (``pytorch_model.bin``) are refused with
the command that converts them, unless ``allow_pickle_weights`` opts in; the conversion keeps every tensor."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from neobert_tasks.errors import ConfigError
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification
from neobert_tasks.model.loading import build_model, convert_pickle_weights
from tests.conftest import tiny_config_kwargs


def _saved_model(folder: Path) -> NeoBERTForSequenceClassification:
    torch.manual_seed(0)
    model = NeoBERTForSequenceClassification(NeoBERTConfig(**tiny_config_kwargs(vocab_size=500)))
    model.save_pretrained(folder)  # transformers 5 writes safetensors whatever safe_serialization says
    return model


def _pickle_only(folder: Path) -> NeoBERTForSequenceClassification:
    """A folder as older transformers wrote it with safe_serialization=False: config.json and a pickle."""
    model = _saved_model(folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return model


def _assert_same_weights(loaded: torch.nn.Module, expected: torch.nn.Module) -> None:
    loaded_state, expected_state = loaded.state_dict(), expected.state_dict()
    assert loaded_state.keys() == expected_state.keys()
    for name, tensor in expected_state.items():
        assert torch.equal(loaded_state[name], tensor), name


def test_pickle_only_folder_is_refused_with_the_conversion_command(tmp_path):
    _pickle_only(tmp_path)
    with pytest.raises(ConfigError) as error:
        build_model(NeoBERTForSequenceClassification, str(tmp_path), None, num_labels=2)
    assert str(error.value) == (
        f"model.init_args.pretrained '{tmp_path}' holds only pickle weights (pytorch_model.bin), which can"
        ' run code when loaded; convert them once to model.safetensors with python -c "from'
        " neobert_tasks.model.loading import convert_pickle_weights;"
        f" convert_pickle_weights('{tmp_path}')\", or, if you trust the folder, set"
        " model.init_args.allow_pickle_weights true."
    )


def test_pickle_weights_load_when_allowed(tmp_path):
    expected = _pickle_only(tmp_path)
    loaded = build_model(NeoBERTForSequenceClassification, str(tmp_path), None, True, num_labels=2)
    _assert_same_weights(loaded, expected)


def test_safetensors_folder_loads(tmp_path):
    expected = _saved_model(tmp_path)
    loaded = build_model(NeoBERTForSequenceClassification, str(tmp_path), None, num_labels=2)
    _assert_same_weights(loaded, expected)


def test_folder_without_weights_says_safetensors_are_missing(tmp_path):
    _saved_model(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(ConfigError) as error:
        build_model(NeoBERTForSequenceClassification, str(tmp_path), None, num_labels=2)
    assert str(error.value).startswith(f"model.init_args.pretrained '{tmp_path}' has no safetensors weights")


def test_the_command_of_the_message_converts_the_folder(tmp_path):
    expected = _pickle_only(tmp_path)
    with pytest.raises(ConfigError) as error:
        build_model(NeoBERTForSequenceClassification, str(tmp_path), None, num_labels=2)
    code = str(error.value).split('python -c "', 1)[1].split('"', 1)[0]
    # In this process: a `python -c` of it spends 9 s importing the package on a busy CPU, for the same code.
    exec(code, {})  # noqa: S102 - the code is the message's own, built above
    loaded = build_model(NeoBERTForSequenceClassification, str(tmp_path), None, num_labels=2)
    _assert_same_weights(loaded, expected)


def test_conversion_of_shared_tensors_and_shards(tmp_path):
    """Tied weights (one storage, two names) are what safetensors' save_file refuses; shards are merged."""
    shared = torch.randn(4, 3)
    first = {"embeddings.weight": shared, "decoder.weight": shared, "transposed": torch.randn(3, 5).T}
    second = {"bias": torch.arange(4.0)}
    for name, state in (
        ("pytorch_model-00001-of-00002.bin", first),
        ("pytorch_model-00002-of-00002.bin", second),
    ):
        torch.save(state, tmp_path / name)
    weight_map = {key: "pytorch_model-00001-of-00002.bin" for key in first}
    weight_map["bias"] = "pytorch_model-00002-of-00002.bin"
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    converted = load_file(convert_pickle_weights(tmp_path))
    assert converted.keys() == {*first, *second}
    for name, tensor in {**first, **second}.items():
        assert torch.equal(converted[name], tensor), name


def test_a_new_classifier_is_one_warning_not_transformers_load_report(tmp_path):
    """An MNLI export fine-tuned on RTE (3 labels to 2) printed transformers' table of every mismatched
    weight under the package's own warning, which says the same in one sentence."""
    three = NeoBERTForSequenceClassification(NeoBERTConfig(**tiny_config_kwargs(), num_labels=3))
    three.save_pretrained(tmp_path / "three")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # transformers' loggers do not propagate to pytest's
    logging.getLogger("transformers").addHandler(handler)
    try:
        with pytest.warns(UserWarning, match=r"has a classifier for 3 labels .* but the data has 2"):
            two = build_model(NeoBERTForSequenceClassification, str(tmp_path / "three"), None, num_labels=2)
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert two.config.num_labels == 2
    assert [record.getMessage() for record in records if record.levelno >= logging.WARNING] == []


def test_a_checkpoint_and_a_random_model_config_together_are_refused():
    """model_config won silently: a fine-tuning command that forgot `model_config null`, or the tiny preset
    composed before a task config, trained a random model and recorded the checkpoint in config.yaml."""
    with pytest.raises(ConfigError, match=r"^model.init_args.pretrained \('runs/x/export'\) and .* both set"):
        build_model(NeoBERTForSequenceClassification, "runs/x/export", tiny_config_kwargs(), num_labels=2)
