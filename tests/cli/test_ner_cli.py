"""NER from the command line on the shared CoNLL-2003 copy: entity metrics are logged, the exported
model keeps the tag names, and ``predict`` writes JSONL whose character offsets slice the input."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForTokenClassification

from tests.cli.helpers import ner_args, read_metrics_csv, run_cli

pytestmark = pytest.mark.slow  # runs the command line end to end

CONLL_TYPES = ("PER", "ORG", "LOC", "MISC")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One short fit shared by the tests of this file."""
    tmp_path = tmp_path_factory.mktemp("ner")
    torch.set_num_threads(1)
    run_dir = run_cli("fit", *ner_args(tmp_path), "--trainer.limit_train_batches", "20", tmp_path=tmp_path)
    return tmp_path, run_dir


def test_fit_logs_entity_metrics_and_exports_tag_names(fitted):
    _, run_dir = fitted
    logged = read_metrics_csv(run_dir)
    for name in ("val/precision", "val/recall", "val/f1", "val/accuracy", "val/loss", "val/strict_f1"):
        assert name in logged, name
    for entity_type in CONLL_TYPES:
        assert f"val/f1_{entity_type}" in logged
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["monitor"] == "val/f1"
    assert 0.0 <= summary["best_metrics"]["val/f1"] <= 1.0
    exported = AutoModelForTokenClassification.from_pretrained(run_dir / "export")
    assert exported.config.id2label[1] == "B-PER" and exported.config.num_labels == 9


def test_validate_reports_the_same_scores_as_fit(fitted):
    tmp_path, run_dir = fitted
    summary = json.loads((run_dir / "metrics.json").read_text())
    validate_dir = run_cli(
        "validate", "--config", str(run_dir / "config.yaml"), "--ckpt_path", summary["best_checkpoint"],
        tmp_path=tmp_path,
    )  # fmt: skip
    logged = read_metrics_csv(validate_dir)
    assert logged["val/f1"][-1] == pytest.approx(summary["best_metrics"]["val/f1"], abs=1e-6)


def test_predict_on_raw_text_writes_entities_with_offsets_into_the_text(fitted):
    tmp_path, run_dir = fitted
    texts = [
        "John Smith works for the United Nations in New York.",
        "Angela Merkel visited Paris on Monday!",
        "",
    ]
    predict_file = tmp_path / "sentences.txt"
    predict_file.write_text("\n".join(texts) + "\n")
    summary = json.loads((run_dir / "metrics.json").read_text())
    predict_dir = run_cli(
        "predict", "--config", str(run_dir / "config.yaml"), "--ckpt_path", summary["best_checkpoint"],
        "--data.init_args.predict_file", str(predict_file), tmp_path=tmp_path,
    )  # fmt: skip
    records = [
        json.loads(line) for line in (predict_dir / "predictions" / "predict.jsonl").read_text().splitlines()
    ]
    assert [record["text"] for record in records] == texts  # one record per line, empty ones too
    columns = (predict_dir / "predictions" / "predict.conll").read_text().split("\n\n")
    assert [line.split(" ")[0] for line in columns[0].splitlines()][:2] == ["John", "Smith"]  # no gold column
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]
            assert entity["type"] in CONLL_TYPES and 0.0 <= entity["score"] <= 1.0


def test_predict_without_a_file_tags_the_test_split(fitted):
    tmp_path, run_dir = fitted
    summary = json.loads((run_dir / "metrics.json").read_text())
    predict_dir = run_cli(
        "predict", "--config", str(run_dir / "config.yaml"), "--ckpt_path", summary["best_checkpoint"],
        tmp_path=tmp_path,
    )  # fmt: skip
    files = sorted(path.name for path in (predict_dir / "predictions").glob("[!.]*"))
    assert files == ["test.conll", "test.jsonl"]
    records = [
        json.loads(line) for line in (predict_dir / "predictions" / "test.jsonl").read_text().splitlines()
    ]
    assert [record["index"] for record in records] == list(range(len(records)))
    for record in records:
        for entity in record["entities"]:
            assert record["text"][entity["start"] : entity["end"]] == entity["text"]


def test_predicted_conll_columns_score_as_the_test_command_does(fitted):
    """``word gold predicted`` lines that seqeval (conlleval's reading) scores to the logged test F1."""
    from seqeval.metrics import f1_score  # noqa: PLC0415 - a dev dependency

    tmp_path, run_dir = fitted
    summary = json.loads((run_dir / "metrics.json").read_text())
    arguments = ["--config", str(run_dir / "config.yaml"), "--ckpt_path", summary["best_checkpoint"]]
    test_dir = run_cli("test", *arguments, tmp_path=tmp_path)
    predict_dir = run_cli("predict", *arguments, tmp_path=tmp_path)
    sentences = (predict_dir / "predictions" / "test.conll").read_text().split("\n\n")
    rows = [[line.split(" ") for line in sentence.splitlines()] for sentence in sentences if sentence.strip()]
    assert all(len(row) == 3 for sentence in rows for row in sentence)
    gold = [[row[1] for row in sentence] for sentence in rows]
    predicted = [[row[2] for row in sentence] for sentence in rows]
    logged = read_metrics_csv(test_dir)["test/f1"][-1]
    assert f1_score(gold, predicted) == pytest.approx(logged, abs=1e-6)
