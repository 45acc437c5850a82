"""``fit``, ``validate`` and ``predict`` of `configs/long_document.yaml` on the shared Hyperpartisan copy.

The tiny model reads 128-token windows, so the articles (median ~540 tokens)
are cut into several windows each; gradient checkpointing is on to check that it works with pooling.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.cli.helpers import CONFIGS, CPU, DEBUG, TINY, cache_args, read_metrics_csv, run_cli
from tests.conftest import shared_path

pytestmark = pytest.mark.slow  # runs the command line end to end

DOCUMENTS = 8  # documents of each evaluation split scored and predicted


@pytest.fixture
def long_document_args(tmp_path) -> list[str]:
    return [
        "--config", str(CONFIGS / "long_document.yaml"),
        "--config", str(TINY), "--config", str(DEBUG), "--config", str(CPU),
        "--data.init_args.tokenizer", str(shared_path("tokenizers", "bert-base-uncased")),
        "--data.init_args.data_dir", str(shared_path("data", "hyperpartisan_news_detection", "byarticle")),
        "--data.init_args.max_length", "128",
        "--data.init_args.stride", "32",
        "--data.init_args.limit_train_samples", "8",
        "--data.init_args.limit_eval_samples", str(DOCUMENTS),
        "--trainer.accumulate_grad_batches", "2",
        "--trainer.limit_val_batches", "1.0",
        "--trainer.limit_predict_batches", "1.0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--model.init_args.gradient_checkpointing", "true",
        *cache_args(tmp_path),
    ]  # fmt: skip


def test_fit_validate_predict_one_line_per_document(long_document_args, tmp_path):
    run_dir = run_cli("fit", *long_document_args, tmp_path=tmp_path)
    logged = read_metrics_csv(run_dir)
    assert {"val/accuracy", "val/f1", "val/loss", "train/loss"} <= set(logged)
    assert json.loads((run_dir / "metrics.json").read_text())["monitor"] == "val/accuracy"

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    validate_dir = run_cli("validate", *long_document_args, "--ckpt_path", str(checkpoint), tmp_path=tmp_path)
    validated = read_metrics_csv(validate_dir)
    assert validated["val/accuracy"][-1] == pytest.approx(logged["val/accuracy"][-1])

    predict_dir = run_cli("predict", *long_document_args, "--ckpt_path", str(checkpoint), tmp_path=tmp_path)
    predictions = pd.read_csv(predict_dir / "predictions" / "test.tsv", sep="\t")
    assert list(predictions["index"]) == list(range(DOCUMENTS))  # one line per document, in order
    assert set(predictions["prediction"]) <= {"not_hyperpartisan", "hyperpartisan"}
