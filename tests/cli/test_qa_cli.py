"""Question answering from the command line on the shared SQuAD copies: a short fit logs the official scores,
validating the best checkpoint reproduces them from the cached windows, ``predict`` writes the official
``predictions.json``, and SQuAD v2.0 logs its answerable/unanswerable and best-threshold scores."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from neobert_tasks.metrics.squad import squad_scores
from tests.cli.helpers import CONFIGS, CPU, DEBUG, TINY, cache_args, read_metrics_csv, run_cli
from tests.conftest import shared_path

pytestmark = pytest.mark.slow  # runs the command line end to end

LIMIT_TRAIN, LIMIT_EVAL = 64, 32
V2_KEYS = ("has_ans_f1", "has_ans_exact_match", "no_ans_f1", "no_ans_exact_match", "best_f1",
           "best_f1_thresh", "best_exact_match", "has_ans_total", "no_ans_total")  # fmt: skip


def squad_args(config: str, data: str, tmp_path) -> list[str]:
    """A quick CPU run of a SQuAD config with the tiny model on the first questions of the shared copy."""
    return [
        "--config", str(CONFIGS / config),
        "--config", str(TINY), "--config", str(DEBUG), "--config", str(CPU),
        "--data.init_args.tokenizer", str(shared_path("tokenizers", "bert-base-uncased")),
        "--data.init_args.data_dir", str(shared_path("data", data)),
        "--data.init_args.limit_train_samples", str(LIMIT_TRAIN),
        "--data.init_args.limit_eval_samples", str(LIMIT_EVAL),
        # Every window of the limited split is evaluated, so every question gets an answer.
        "--trainer.limit_val_batches", "1.0", "--trainer.limit_predict_batches", "1.0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *cache_args(tmp_path),
    ]  # fmt: skip


def question_ids(data: str) -> list[str]:
    """Ids of the first `LIMIT_EVAL` questions of a shared validation split, in order."""
    frame = pd.read_parquet(shared_path("data", data, "validation.parquet"), columns=["id"])
    return frame["id"].head(LIMIT_EVAL).tolist()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One short SQuAD v1.1 fit shared by the tests of this file."""
    tmp_path = tmp_path_factory.mktemp("squad")
    torch.set_num_threads(1)
    run_dir = run_cli("fit", *squad_args("squad.yaml", "squad", tmp_path), tmp_path=tmp_path)
    return tmp_path, run_dir


def test_fit_logs_official_scores(fitted):
    _, run_dir = fitted
    logged = read_metrics_csv(run_dir)
    for name in ("val/exact_match", "val/f1", "val/loss", "train/loss"):
        assert name in logged, name
    assert all(0.0 <= value <= 100.0 for value in logged["val/f1"] + logged["val/exact_match"])
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["monitor"] == "val/f1"
    assert summary["best_metrics"]["val/f1"] >= summary["best_metrics"]["val/exact_match"]


def test_validate_reproduces_the_scores_of_fit(fitted):
    tmp_path, run_dir = fitted
    summary = json.loads((run_dir / "metrics.json").read_text())
    validate_dir = run_cli(
        "validate", "--config", str(run_dir / "config.yaml"), "--ckpt_path", summary["best_checkpoint"],
        tmp_path=tmp_path,
    )  # fmt: skip
    logged = read_metrics_csv(validate_dir)
    for name in ("val/f1", "val/exact_match", "val/loss"):
        assert logged[name][-1] == pytest.approx(summary["best_metrics"][name], abs=1e-4), name


def test_logged_scores_have_the_official_scores_every_digit(fitted):
    """metrics.json and metrics.csv hold the official scores of the answers ``predict`` writes, in float64
    (Lightning stores a logged float as float32, 3e-6 off at F1 92)."""
    tmp_path, run_dir = fitted
    summary = json.loads((run_dir / "metrics.json").read_text())
    arguments = ["--config", str(run_dir / "config.yaml"), "--ckpt_path", summary["best_checkpoint"]]
    predict_dir = run_cli("predict", *arguments, tmp_path=tmp_path)
    answers = json.loads((predict_dir / "predictions" / "predictions.json").read_text())
    frame = pd.read_parquet(shared_path("data", "squad", "validation.parquet"), columns=["id", "answers"])
    gold = {row.id: list(row.answers["text"]) for row in frame.head(LIMIT_EVAL).itertuples()}
    official = squad_scores(answers, gold)
    for name in ("f1", "exact_match"):
        assert summary["best_metrics"][f"val/{name}"] == pytest.approx(official[name], rel=1e-15, abs=0), name


def test_predict_writes_an_answer_for_every_question(fitted):
    tmp_path, run_dir = fitted
    predict_dir = run_cli(
        "predict", "--config", str(run_dir / "config.yaml"),
        "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"),
        tmp_path=tmp_path,
    )  # fmt: skip
    assert sorted(path.name for path in (predict_dir / "predictions").glob("[!.]*")) == ["predictions.json"]
    predictions = json.loads((predict_dir / "predictions" / "predictions.json").read_text())
    assert list(predictions) == question_ids("squad")
    contexts = pd.read_parquet(shared_path("data", "squad", "validation.parquet"), columns=["id", "context"])
    context_of = dict(zip(contexts["id"], contexts["context"], strict=True))
    for question_id, answer in predictions.items():
        assert answer and answer in context_of[question_id]  # v1.1 always answers with a span of the context


def test_predict_file_answers_as_the_split_does(fitted):
    """Questions of a file of one's own (no ids: row numbers) get the answers their split rows get, with
    each answer's position and probability in predict.jsonl."""
    tmp_path, run_dir = fitted
    rows = pd.read_parquet(shared_path("data", "squad", "validation.parquet")).head(5)
    questions = tmp_path / "questions.jsonl"
    rows[["question", "context"]].to_json(questions, orient="records", lines=True)
    common = [
        "--config",
        str(run_dir / "config.yaml"),
        "--ckpt_path",
        str(run_dir / "checkpoints" / "last.ckpt"),
    ]
    split_answers = json.loads(
        (run_cli("predict", *common, tmp_path=tmp_path) / "predictions" / "predictions.json").read_text()
    )
    predict_dir = run_cli(
        "predict", *common, "--data.init_args.predict_file", str(questions), tmp_path=tmp_path
    )
    files = sorted(path.name for path in (predict_dir / "predictions").glob("[!.]*"))
    assert files == ["predict.jsonl", "predictions.json"]
    answered = [
        json.loads(line) for line in (predict_dir / "predictions" / "predict.jsonl").read_text().splitlines()
    ]
    assert [row["id"] for row in answered] == ["0", "1", "2", "3", "4"]
    assert [row["question"] for row in answered] == rows["question"].tolist()
    assert [row["answer"] for row in answered] == [split_answers[question_id] for question_id in rows["id"]]
    for row, context in zip(answered, rows["context"], strict=True):
        assert context[row["start"] : row["start"] + len(row["answer"])] == row["answer"]
        assert 0 < row["probability"] <= 1


def test_squad_v2_logs_answerable_unanswerable_and_threshold_scores(tmp_path):
    torch.set_num_threads(1)
    args = squad_args("squad_v2.yaml", "squad_v2", tmp_path)
    validate_dir = run_cli("validate", *args, tmp_path=tmp_path)  # squad_v2 has no train split here
    logged = read_metrics_csv(validate_dir)
    for name in ("val/exact_match", "val/f1", "val/loss", *(f"val/{key}" for key in V2_KEYS)):
        assert name in logged, name
    assert logged["val/has_ans_total"][-1] + logged["val/no_ans_total"][-1] == LIMIT_EVAL
    assert logged["val/best_f1"][-1] >= logged["val/f1"][-1]
    predict_dir = run_cli("predict", *args, "--model.init_args.write_nbest", "true", tmp_path=tmp_path)
    files = {path.name: json.loads(path.read_text()) for path in (predict_dir / "predictions").glob("[!.]*")}
    assert sorted(files) == ["nbest_predictions.json", "null_odds.json", "predictions.json"]
    assert list(files["predictions.json"]) == list(files["null_odds.json"]) == question_ids("squad_v2")
    for question_id, answer in files["predictions.json"].items():
        odds = files["null_odds.json"][question_id]
        assert (answer == "") == (odds > 0.0)  # the threshold is 0; odds are inf without a candidate span
        candidates = files["nbest_predictions.json"][question_id]
        assert len(candidates) <= 20 and (answer == "" or answer == candidates[0]["text"])


def test_windows_longer_than_the_model_are_refused(tmp_path, capsys):
    args = squad_args("squad.yaml", "squad", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        run_cli("validate", *args, "--data.init_args.max_length", "8192", tmp_path=tmp_path)
    assert exit_info.value.code == 2
    assert "data.init_args.max_length (8192) exceeds the model's max_length (4096)" in capsys.readouterr().err
