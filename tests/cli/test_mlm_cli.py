"""A short MLM run of the tiny model on real text (SQuAD contexts): the validation loss goes down and the
export loads as a sequence classifier."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from safetensors import safe_open

from neobert_tasks.model import NeoBERTForSequenceClassification
from tests.cli.helpers import CONFIGS, CPU, TINY, cache_args, read_metrics_csv, run_cli
from tests.conftest import shared_path

pytestmark = pytest.mark.slow  # runs the command line end to end


def write_contexts(directory) -> None:
    """SQuAD's distinct contexts as one-document-per-line text files (the last 100 for validation)."""
    contexts = pq.read_table(shared_path("data", "squad", "validation.parquet"), columns=["context"])
    documents = list(dict.fromkeys(text.replace("\n", " ") for text in contexts["context"].to_pylist()))
    directory.mkdir()
    (directory / "train.txt").write_text("\n".join(documents[:-100]) + "\n")
    (directory / "validation.txt").write_text("\n".join(documents[-100:]) + "\n")


def mlm_args(tmp_path, data) -> list:
    """The MLM config on a tiny model over the text files in ``data``, 64 tokens a row, no validation inside
    an epoch."""
    return [
        "--config", CONFIGS / "mlm.yaml", "--config", TINY, "--config", CPU,
        "--data.init_args.tokenizer", shared_path("tokenizers", "bert-base-uncased"),
        "--data.init_args.dataset", "null", "--data.init_args.data_dir", data,
        "--data.init_args.max_length", "64", "--trainer.val_check_interval", "null", *cache_args(tmp_path),
    ]  # fmt: skip


def test_mlm_run_lowers_validation_loss_and_exports(tmp_path):
    data = tmp_path / "text"
    write_contexts(data)
    args = [
        *mlm_args(tmp_path, data), "--data.init_args.batch_size", "16",
        "--data.init_args.limit_train_samples", "150", "--data.init_args.limit_eval_samples", "20",
        "--model.init_args.learning_rate", "2e-3", "--model.init_args.warmup_steps", "5",
        "--trainer.max_steps", "25",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    before = read_metrics_csv(run_cli("validate", *args, tmp_path=tmp_path))["val/loss"][-1]
    # Each example is masked alike whatever batch it lands in (and so on any number of processes).
    other_batching = run_cli("validate", *args, "--data.init_args.eval_batch_size", "1", tmp_path=tmp_path)
    assert read_metrics_csv(other_batching)["val/loss"][-1] == pytest.approx(before, rel=1e-5)
    run_dir = run_cli("fit", *args, tmp_path=tmp_path)
    after = read_metrics_csv(run_dir)["val/loss"][-1]
    assert after < before - 0.5, (before, after)
    assert json.loads((run_dir / "metrics.json").read_text())["monitor"] == "val/loss"

    export = run_dir / "export"
    with safe_open(export / "model.safetensors", "pt") as weights:
        keys = set(weights.keys())
    assert {"decoder.weight", "decoder.bias"} <= keys
    assert all(key.startswith(("model.", "decoder.")) for key in keys)
    model, info = NeoBERTForSequenceClassification.from_pretrained(
        export, num_labels=2, output_loading_info=True
    )
    assert sorted(info["missing_keys"]) == [
        "classifier.bias",
        "classifier.weight",
        "dense.bias",
        "dense.weight",
    ]
    assert (export / "tokenizer.json").exists()


def test_mlm_run_without_validation_exports_its_final_weights(tmp_path):
    """validation_fraction 0 and no validation.txt: the export failed after training (no loaders to count)."""
    data = tmp_path / "text"
    write_contexts(data)
    (data / "validation.txt").unlink()
    args = [*mlm_args(tmp_path, data), "--data.init_args.validation_fraction", "0"]
    args += ["--data.init_args.limit_train_samples", "32", "--trainer.max_steps", "2"]
    run_dir = run_cli("fit", *args, tmp_path=tmp_path)
    assert (run_dir / "export" / "model.safetensors").is_file() and (run_dir / "metrics.json").is_file()
