"""LoRA through peft: options, what trains, merged exports, checkpoints that hold the adapters only."""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.errors import ConfigError
from neobert_tasks.model import NeoBERTConfig, NeoBERTForMaskedLM, NeoBERTForSequenceClassification
from neobert_tasks.tasks.lora import (
    FINGERPRINT_KEY,
    add_lora,
    check_lora_checkpoint,
    frozen_fingerprint,
    lora_description,
    lora_options,
    merged_copy,
    save_adapter,
    trainable_state_dict,
)

pytest.importorskip("peft", reason="the peft extra is not installed")

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 48}


def tiny_classifier(seed: int = 0) -> NeoBERTForSequenceClassification:
    torch.manual_seed(seed)
    return NeoBERTForSequenceClassification(NeoBERTConfig(**TINY, vocab_size=100, num_labels=3)).eval()


def with_trained_adapters(seed: int = 0):
    """A LoRA-wrapped classifier whose adapters are non-zero (peft starts B at 0, a no-op update)."""
    model = add_lora(tiny_classifier(seed), {"r": 4, "dropout": 0.0}, ("dense", "classifier"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model.eval()


def test_defaults_and_description():
    assert lora_options({}) == {
        "r": 8,
        "alpha": 16,
        "dropout": 0.0,
        "target_modules": ["qkv", "wo", "w12", "w3"],
    }
    assert lora_description({"r": 4, "target_modules": ["qkv"]}) == "LoRA r=4, alpha=16, dropout=0.0 on qkv"


@pytest.mark.parametrize(
    ("peft", "message"),
    [
        ({"rank": 8}, "unknown key(s) rank; it takes r, alpha, dropout, target_modules"),
        ({"r": 0}, "peft.r must be a positive integer, got 0"),
        ({"dropout": 1.0}, "peft.dropout must be in [0, 1)"),
        ({"alpha": -1}, "peft.alpha must be a positive number, got -1"),  # was accepted
        ({"alpha": 0}, "peft.alpha must be a positive number, got 0"),
        (
            {"target_modules": ["query"]},
            "target_modules ['query'] must name one or more of NeoBERT's projections",
        ),
        ({"target_modules": []}, "target_modules [] must name"),
    ],
)
def test_wrong_options_are_refused_naming_the_key(peft, message):
    with pytest.raises(ConfigError, match=None) as error:
        lora_options(peft)
    assert message in str(error.value)


def test_only_the_adapters_and_the_head_train():
    model = add_lora(tiny_classifier(), {"target_modules": ["qkv", "w3"]}, ("dense", "classifier"))
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    assert trainable, "nothing trains"
    for name in trainable:
        assert ".lora_" in name or ".modules_to_save." in name, name
    assert not any(".wo." in name or ".w12." in name for name in trainable)
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable if ".lora_" in name}
    assert adapted == {"qkv", "w3"}
    heads = {
        name.split(".modules_to_save")[0].rsplit(".", 1)[-1]
        for name in trainable
        if "modules_to_save" in name
    }
    assert heads == {"dense", "classifier"}


def test_merged_copy_gives_the_adapted_logits_and_leaves_the_model_wrapped():
    model = with_trained_adapters()
    inputs = {
        "input_ids": torch.randint(0, 100, (3, 9)),
        "attention_mask": torch.ones(3, 9, dtype=torch.long),
    }
    inputs["attention_mask"][0, 6:] = 0
    with torch.no_grad():
        adapted = model(**inputs).logits
        plain = tiny_classifier()(**inputs).logits
        merged = merged_copy(model)
        assert type(merged) is NeoBERTForSequenceClassification
        torch.testing.assert_close(merged(**inputs).logits, adapted, rtol=0, atol=1e-5)
        assert (adapted - plain).abs().max() > 1e-3  # the adapters changed something
    assert hasattr(model, "peft_config")  # the live model keeps its adapters


def test_the_adapter_cards_load_line_rebuilds_a_head_of_three_named_labels(tmp_path):
    """peft rebuilds the base model from the base's own config (2 unnamed labels): the card's line passes the
    head's labels, or a 3-label adapter fails to load (a size mismatch of the classifier)."""
    torch.manual_seed(0)
    NeoBERTForMaskedLM(NeoBERTConfig(**TINY, vocab_size=100)).save_pretrained(tmp_path / "base")
    names = {0: "politics", 1: "sports", 2: "tech"}
    head = NeoBERTForSequenceClassification.from_pretrained(
        tmp_path / "base", id2label=names, label2id={name: index for index, name in names.items()},
        problem_type="multi_label_classification",
    )  # fmt: skip
    model = add_lora(head, {"r": 4, "dropout": 0.0}, ("dense", "classifier")).eval()
    save_adapter(model, tmp_path / "adapter", str(tmp_path / "base"))
    card = (tmp_path / "adapter" / "README.md").read_text()
    code = card.split("```python\n")[1].split("```")[0].replace("path/to/adapter", str(tmp_path / "adapter"))
    assert "problem_type='multi_label_classification'" in code
    namespace: dict = {}
    exec(code, namespace)  # the card's own lines
    loaded = namespace["model"].eval()
    assert loaded.config.id2label == names and loaded.config.problem_type == "multi_label_classification"
    input_ids = torch.randint(0, 100, (2, 7))
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits)


def test_checkpoint_state_keeps_the_trainable_tensors_only():
    model = with_trained_adapters()
    state = trainable_state_dict(model, model.state_dict())
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert set(state) == trainable
    total = sum(parameter.numel() for parameter in model.parameters())
    assert sum(value.numel() for value in state.values()) < 0.2 * total


def test_a_checkpoint_without_adapters_or_over_another_backbone_is_refused():
    model = with_trained_adapters(seed=0)
    checkpoint = {
        "state_dict": trainable_state_dict(model, model.state_dict()),
        FINGERPRINT_KEY: frozen_fingerprint(model),
    }
    check_lora_checkpoint(with_trained_adapters(seed=0), checkpoint, "Checkpoint 'a.ckpt'")  # same backbone
    with pytest.raises(ConfigError, match="'a.ckpt' was trained over other frozen weights"):
        check_lora_checkpoint(with_trained_adapters(seed=1), checkpoint, "Checkpoint 'a.ckpt'")
    full = {"state_dict": tiny_classifier().state_dict()}
    with pytest.raises(
        ConfigError, match="has no weights for .* adapter's tensors .* without model.init_args.peft"
    ):
        check_lora_checkpoint(model, full, "Checkpoint 'full.ckpt'")


TASKS = {
    "SequenceClassificationTask": ({"num_labels": 2}, {"dense", "classifier"}),
    "LongDocumentClassificationTask": ({"num_labels": 2}, {"dense", "classifier"}),
    "TokenClassificationTask": ({"label_names": ["O", "B-PER", "I-PER"]}, {"classifier"}),
    "QuestionAnsweringTask": ({}, {"qa_outputs"}),
    "MaskedLanguageModelingTask": ({}, {"decoder"}),
    "EmbeddingTask": ({}, set()),
}


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_task_trains_adapters_and_its_head(task_name):
    """LoRA for every task: the adapters on all four projections and the task's head train, nothing else,
    and the model still runs (the MLM task reaches the backbone and decoder through ``network``)."""
    import neobert_tasks.tasks as tasks

    arguments, head = TASKS[task_name]
    config = {**TINY, "vocab_size": 100, "max_length": 64}
    # (A random backbone under adapters is a test's choice, not a user's: the task warns of it.)
    with pytest.warns(UserWarning, match=r"peft trains adapters over a randomly initialised backbone"):
        task = getattr(tasks, task_name)(pretrained=None, model_config=config, peft={"r": 2}, **arguments)
    trainable = [name for name, parameter in task.named_parameters() if parameter.requires_grad]
    adapted = {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in trainable if ".lora_" in name}
    assert adapted == {"qkv", "wo", "w12", "w3"}
    saved = {
        name.split(".modules_to_save")[0].rsplit(".", 1)[-1]
        for name in trainable
        if "modules_to_save" in name
    }
    assert saved == head
    assert all(".lora_" in name or "modules_to_save" in name for name in trainable)
    inputs = {
        "input_ids": torch.randint(0, 100, (2, 8)),
        "attention_mask": torch.ones(2, 8, dtype=torch.long),
    }
    with torch.no_grad():
        task.model(**inputs)
    assert task.network.base_model.config.hidden_size == 32  # the task's own class under the wrapper
    assert type(task.export_model()) is type(task.network)
