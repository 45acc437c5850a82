"""LoRA, layer-wise learning rates, freezing, another optimiser and class weights from the command line.

The LoRA runs start from a saved tiny "pretrained" model, as a real run starts from NeoBERT: its frozen
weights are rebuilt from that folder, its checkpoints hold the adapters and the head only, and its export
is a merged plain model plus the adapter in PEFT's format, loadable with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from neobert_tasks.model import NeoBERTConfig, NeoBERTForMaskedLM, NeoBERTForSequenceClassification
from tests.cli.helpers import (
    build_cli,
    command_error,
    ner_args,
    quickstart_args,
    read_metrics_csv,
    run_cli,
)

pytestmark = pytest.mark.slow  # runs the command line end to end
peft = pytest.importorskip("peft", reason="the peft extra is not installed")

TEXTS = ["a gripping, beautifully shot film", "dull and far too long", "fine"]
BASE_SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


@pytest.fixture(scope="module")
def base_model(tmp_path_factory) -> Path:
    """A tiny MLM model saved as a folder: the frozen backbone the adapters are trained on."""
    directory = tmp_path_factory.mktemp("base")
    torch.manual_seed(3)
    NeoBERTForMaskedLM(NeoBERTConfig(**BASE_SHAPE)).save_pretrained(directory)
    return directory


def lora_args(tmp_path: Path, base: Path) -> list[str]:
    return [
        *quickstart_args(tmp_path), "--model.init_args.pretrained", str(base),
        "--model.init_args.model_config", "null", "--model.init_args.peft", "{r: 4, alpha: 8}",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, base_model) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("lora")
    torch.set_num_threads(1)
    run_dir = run_cli("fit", *lora_args(tmp_path, base_model), tmp_path=tmp_path)
    return tmp_path, run_dir


def test_lora_checkpoints_hold_the_adapters_and_head_only(lora_run):
    _, run_dir = lora_run
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    names = list(checkpoint["state_dict"])
    assert names and all(".lora_" in name or ".modules_to_save." in name for name in names), names
    assert {name.split(".lora_")[0].rsplit(".", 1)[-1] for name in names if ".lora_" in name} == {
        "qkv", "wo", "w12", "w3",
    }  # fmt: skip
    trained = sum(value.numel() for value in checkpoint["state_dict"].values())
    assert trained < 0.1 * sum(
        t.numel() for t in NeoBERTForMaskedLM.from_pretrained(run_dir / "export").parameters()
    )
    # Adam's moments exist for exactly the saved tensors.
    assert len(checkpoint["optimizer_states"][0]["state"]) == len(names)


def test_lora_export_is_merged_and_the_adapter_loads_with_peft(lora_run, base_model):
    _, run_dir = lora_run
    export = run_dir / "export"
    tokenizer = AutoTokenizer.from_pretrained(export)
    inputs = tokenizer(TEXTS, padding=True, return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(export, trust_remote_code=True).eval()
    adapter = export / "adapter"
    plain = (adapter / "adapter_config.json").stat().st_mode  # peft wrote the weights 0600
    assert (adapter / "adapter_model.safetensors").stat().st_mode == plain
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_model
    )
    base = NeoBERTForSequenceClassification.from_pretrained(base_model, num_labels=2)
    unmerged = peft.PeftModel.from_pretrained(base, adapter).eval()
    with torch.no_grad():
        expected = unmerged(**inputs).logits
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=0, atol=1e-5)
        plain = NeoBERTForSequenceClassification.from_pretrained(base_model, num_labels=2).eval()
        assert (plain(**inputs).logits - expected).abs().max() > 1e-4  # the adapter did change the model
    # AutoPeftModel rebuilds the base through transformers' Auto class, not this package's head class.
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert saved["auto_mapping"] == {
        "base_model_class": "AutoModelForSequenceClassification",
        "parent_library": "transformers",
    }
    automatic = peft.AutoPeftModel.from_pretrained(adapter, num_labels=2).eval()
    with torch.no_grad():
        torch.testing.assert_close(automatic(**inputs).logits, expected, rtol=0, atol=1e-5)
    card = (adapter / "README.md").read_text()
    assert (
        f"base_model: {base_model}" in card and "LoRA r=4, alpha=8, dropout=0.0 on qkv, wo, w12, w3" in card
    )
    # The merged model's card says that LoRA trained it, not full fine-tuning.
    lora = "`LoRA r=4, alpha=8, dropout=0.0 on qkv, wo, w12, w3; the adapter alone is in adapter/`"
    assert f"| `peft` | {lora} |" in (export / "README.md").read_text()


def test_lora_checkpoint_validates_and_refuses_another_backbone(lora_run, tmp_path, capsys):
    _, run_dir = lora_run
    summary = json.loads((run_dir / "metrics.json").read_text())
    config = run_dir / "config.yaml"
    build_cli("validate", "--config", config, "--ckpt_path", summary["best_checkpoint"])
    validated = read_metrics_csv(run_dir / "validate")["val/accuracy"][-1]
    assert validated == pytest.approx(summary["best_metrics"]["val/accuracy"], abs=1e-6)
    other = tmp_path / "other_base"
    torch.manual_seed(4)
    NeoBERTForMaskedLM(NeoBERTConfig(**BASE_SHAPE)).save_pretrained(other)
    message = command_error(
        capsys, "validate", "--config", config, "--ckpt_path", summary["best_checkpoint"],
        "--model.init_args.pretrained", str(other), tmp_path=tmp_path,
    )  # fmt: skip
    assert "was trained over other frozen weights than the model built now" in message


def test_lora_logs_what_trains(tmp_path, base_model, caplog):
    with caplog.at_level(logging.INFO):
        run_cli("fit", *lora_args(tmp_path, base_model), "--trainer.max_epochs", "1", tmp_path=tmp_path)
    line = next(record.message for record in caplog.records if record.message.startswith("Training "))
    assert "LoRA r=4, alpha=8, dropout=0.0 on qkv, wo, w12, w3" in line


def test_layer_decay_freezing_and_another_optimizer(tmp_path):
    options = [
        *quickstart_args(tmp_path), "--trainer.max_epochs", "1",
        "--model.init_args.layer_decay", "0.5", "--model.init_args.freeze_embeddings", "true",
        "--model.init_args.freeze_layers", "1",
        "--model.init_args.optimizer", "torch.optim.SGD", "--model.init_args.optimizer.momentum", "0.9",
    ]  # fmt: skip
    initial = build_cli(*options, run=False).model.state_dict()
    run_dir = run_cli("fit", *options, tmp_path=tmp_path)
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    names = {group["name"] for group in groups}
    assert names == {"layer_2_decay", "layer_2_no_decay", "layer_3_decay", "layer_3_no_decay"}
    assert all(group["momentum"] == 0.9 for group in groups)  # SGD's own option
    final = {group["name"]: group["lr"] for group in groups}
    assert final["layer_2_decay"] == pytest.approx(0.5 * final["layer_3_decay"])
    for name, value in checkpoint["state_dict"].items():
        frozen = name.endswith("model.encoder.weight") or ".transformer_encoder.0." in name
        assert torch.equal(value, initial[name]) is frozen, name


def test_balanced_class_weights_and_label_smoothing_for_ner(tmp_path, caplog):
    args = [
        *ner_args(tmp_path),
        "--model.init_args.class_weights", "balanced", "--model.init_args.label_smoothing", "0.1",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        run_cli("fit", *args, "--trainer.limit_train_batches", "4", tmp_path=tmp_path)
    line = next(record.message for record in caplog.records if "class_weights" in record.message)
    weights = dict(part.rsplit(" ", 1) for part in line.split(": ", 1)[1].rstrip(".").split(", "))
    assert float(weights["O"]) < 1 < float(weights["B-MISC"])  # "O" is the most frequent tag by far


def test_multi_label_pos_weight(tmp_path, caplog):
    """``pos_weight: balanced`` on multi-label data (lists of tag names): negatives / positives per label."""
    data = tmp_path / "tags"
    data.mkdir()
    tags = [["funny"], ["sad", "long"], [], ["long"], ["funny", "long"], ["sad"], [], ["long"]] * 8
    for split in ("train", "validation"):
        lines = [
            json.dumps({"sentence": f"sentence number {i} of {split}", "label": t})
            for i, t in enumerate(tags)
        ]
        (data / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    args = [*quickstart_args(tmp_path), "--data.init_args.data_dir", str(data), "--trainer.max_epochs", "1",
            "--model.init_args.pos_weight", "balanced"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        run_dir = run_cli("fit", *args, tmp_path=tmp_path)
    line = next(record.message for record in caplog.records if "pos_weight" in record.message)
    # 64 rows: funny in 16, long in 32, sad in 16.
    assert line == "Training loss pos_weight: funny 3, long 1, sad 3."
    assert json.loads((run_dir / "metrics.json").read_text())["best_metrics"]


def test_a_fine_tuned_checkpoint_evaluates_without_the_folder_it_started_from(base_model, tmp_path):
    """validate and predict restore every weight from the checkpoint: the model is built from the shape it
    records, so a base folder since deleted (or a hub id offline) no longer stops them."""
    base = tmp_path / "base_copy"
    shutil.copytree(base_model, base)
    args = [
        *quickstart_args(tmp_path),
        "--model.init_args.pretrained",
        str(base),
        "--model.init_args.model_config",
        "null",
    ]
    run_dir = run_cli("fit", *args, tmp_path=tmp_path)
    shutil.rmtree(base)
    summary = json.loads((run_dir / "metrics.json").read_text())
    build_cli("validate", "--config", run_dir / "config.yaml", "--ckpt_path", "best")
    validated = read_metrics_csv(run_dir / "validate")["val/accuracy"][-1]
    assert validated == pytest.approx(summary["best_metrics"]["val/accuracy"], abs=1e-6)
    build_cli("predict", "--config", run_dir / "config.yaml", "--ckpt_path", "best")
    assert list((run_dir / "predictions").glob("*.jsonl"))
