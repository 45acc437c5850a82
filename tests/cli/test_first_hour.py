"""What a new user does after the quickstart: read the result, score the run again, classify new sentences.

One quick fit of the quickstart (debug preset), then, from its saved config.yaml and checkpoint only:
`validate` writes into the run (``<run>/validate``) with no new ``version_N`` and no Lightning warning about
a changed checkpoint folder, and `predict` classifies a text file, with no training data at hand, into
``<run>/predictions``. Each command ends with plain closing lines.
"""

from __future__ import annotations

import csv
import json
import warnings

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tests.cli.helpers import build_cli, quickstart_args, read_metrics_csv

pytestmark = pytest.mark.slow  # runs the command line end to end

NEW_SENTENCES = ["a wonderful, moving film", 'the "worst"\tthing i have seen', "fine"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A fitted quickstart run folder (``<root>/version_0``) and the closing lines fit printed."""
    tmp_path = tmp_path_factory.mktemp("first_hour")
    with pytest.MonkeyPatch.context() as patch:
        printed = []
        patch.setattr("builtins.print", lambda *args, **kwargs: printed.append(" ".join(map(str, args))))
        cli = build_cli("fit", *quickstart_args(tmp_path))
    return tmp_path / "runs" / "version_0", cli, "\n".join(printed)


def test_fit_ends_with_the_best_score_and_where_the_files_are(trained_run):
    run_dir, cli, printed = trained_run
    summary = json.loads((run_dir / "metrics.json").read_text())
    best = summary["best_metrics"]
    head, *files = printed.splitlines()[-4:]
    assert head.startswith(f"Best val/accuracy {best['val/accuracy']:.4f} (")
    assert head.endswith(f"at epoch {best['epoch']}, step {best['step']}")
    assert [line.split()[0] for line in files] == ["checkpoint", "export", "scores"]
    assert files[0].split()[1].endswith(summary["best_checkpoint"].split("/runs/")[-1])


def test_validate_of_a_run_writes_into_it_without_warnings(trained_run, capsys):
    run_dir, _, _ = trained_run
    checkpoint = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = build_cli("validate", "--config", run_dir / "config.yaml", "--ckpt_path", checkpoint)
    assert not [str(w.message) for w in caught if "dirpath has changed" in str(w.message)]
    assert not (run_dir.parent / "version_1").exists()
    assert (run_dir / "validate" / "metrics.csv").is_file()
    accuracy = float(cli.trainer.callback_metrics["val/accuracy"])
    lines = capsys.readouterr().out.strip().splitlines()[-3:]
    assert lines[0].startswith(f"Validate: val/accuracy {accuracy:.4f} (")
    assert lines[2].split()[0] == "logged" and lines[2].endswith("validate/metrics.csv")


def test_validate_into_another_folder_restores_the_checkpoint_without_warnings(trained_run, tmp_path):
    """--trainer.default_root_dir sends the results elsewhere; the checkpoint callback still names the run
    the checkpoint came from, so Lightning does not warn that the best score was dropped."""
    run_dir, _, _ = trained_run
    checkpoint = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    elsewhere = tmp_path / "elsewhere"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_cli(
            "validate", "--config", run_dir / "config.yaml", "--ckpt_path", checkpoint,
            "--trainer.default_root_dir", elsewhere,
        )  # fmt: skip
    assert not [str(w.message) for w in caught if "dirpath has changed" in str(w.message)]
    assert (elsewhere / "version_0" / "metrics.csv").is_file()


def test_predict_classifies_a_text_file_without_training_data(trained_run, tmp_path):
    run_dir, _, _ = trained_run
    checkpoint = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    texts = tmp_path / "new.csv"
    with texts.open("w", newline="") as handle:
        csv.writer(handle).writerows([["review"], *([sentence] for sentence in NEW_SENTENCES)])
    empty = tmp_path / "no_data"
    empty.mkdir()
    cli = build_cli(
        "predict", "--config", run_dir / "config.yaml", "--ckpt_path", checkpoint,
        "--data.init_args.data_dir", empty, "--data.init_args.predict_file", texts,
    )  # fmt: skip
    predictions = run_dir / "predictions"
    # The prediction files and the command's config only: predict logs no metric, so no logger files.
    assert sorted(path.name for path in predictions.glob("[!.]*")) == [
        "config.yaml",
        "predict.jsonl",
        "predict.tsv",
    ]
    assert cli.trainer.log_dir == str(predictions)
    with (predictions / "predict.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["sentence"] for row in rows] == NEW_SENTENCES
    records = [json.loads(line) for line in (predictions / "predict.jsonl").read_text().splitlines()]
    for row, record in zip(rows, records, strict=True):
        assert set(record["probabilities"]) == {"negative", "positive"}
        assert (
            record["label"]
            == row["prediction"]
            == max(record["probabilities"], key=record["probabilities"].get)
        )
        assert float(row["score"]) == pytest.approx(record["score"], abs=1e-8)
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


def test_validate_exports_the_checkpoint_it_scored_with_its_scores(trained_run):
    """``--export.after_validate true``: a checkpoint other than the best (here last.ckpt) becomes an export
    folder beside the validation's files, its card giving the checkpoint's epoch, step and scores."""
    run_dir, _, _ = trained_run
    last = run_dir / "checkpoints" / "last.ckpt"
    best_export = (run_dir / "export" / "model.safetensors").read_bytes()
    cli = build_cli(
        "validate",
        "--config",
        run_dir / "config.yaml",
        "--ckpt_path",
        last,
        "--export.after_validate",
        "true",
    )
    export = run_dir / "validate" / "export"
    model = AutoModelForSequenceClassification.from_pretrained(export, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(export, trust_remote_code=True)
    batch = tokenizer(NEW_SENTENCES, padding=True, return_tensors="pt", return_token_type_ids=False)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, cli.model.model.eval()(**batch).logits)
    saved = torch.load(last, map_location="cpu", weights_only=True)
    card = (export / "README.md").read_text()
    assert f"## Validation results (epoch {saved['epoch']}, step {saved['global_step']})" in card
    assert f"| `val/accuracy` | {float(cli.trainer.callback_metrics['val/accuracy']):.4f} |" in card
    assert (run_dir / "export" / "model.safetensors").read_bytes() == best_export  # the fit's stays
    assert not (run_dir / "validate" / "metrics.json").exists()  # a run's metrics.json means a finished fit


def test_a_runs_saved_config_builds_its_classes_from_python(trained_run):
    run_dir, fitted, _ = trained_run
    cli = build_cli("--config", run_dir / "config.yaml", run=False)
    assert type(cli.model) is type(fitted.model) and cli.datamodule.label_names == ["negative", "positive"]


@pytest.mark.parametrize("split", ["train", "validation"])
def test_predict_split_chooses_the_split_predict_labels(trained_run, split, caplog):
    """``data.predict_split`` predicts a split of the user's choice, the training split too (every row,
    as an evaluated split), and the log names it."""
    run_dir, _, _ = trained_run
    checkpoint = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    with caplog.at_level("INFO"):
        build_cli(
            "predict", "--config", run_dir / "config.yaml", "--ckpt_path", checkpoint,
            "--data.init_args.predict_split", split,
        )  # fmt: skip
    with (run_dir / "predictions" / f"{split}.tsv").open(newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [int(row["index"]) for row in rows] == list(range(64))  # the debug preset's limit_eval_samples
    assert f"Predictions of split '{split}' (data.init_args.predict_split)" in caplog.text


def test_validate_writes_its_predictions_on_request(trained_run):
    """``--prediction_writer.after_validate true``: validate scores, then labels the validation split it
    scored, with the same weights, into the run's validate folder."""
    run_dir, _, _ = trained_run
    checkpoint = json.loads((run_dir / "metrics.json").read_text())["best_checkpoint"]
    predictions = run_dir / "validate" / "predictions" / "validation.jsonl"  # beside validate's metrics
    cli = build_cli(
        "validate", "--config", run_dir / "config.yaml", "--ckpt_path", checkpoint,
        "--prediction_writer.after_validate", "true",
    )  # fmt: skip
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(records) == 64  # every validation row scored (the debug preset's limit_eval_samples)
    gold = cli.datamodule.examples("validation")["label"]
    names = cli.model.label_names  # gold labels are names or ids
    hits = [
        record["label"] in (label, names[label] if isinstance(label, int) else label)
        for record, label in zip(records, gold, strict=True)
    ]
    accuracy = sum(hits) / len(records)
    assert accuracy == pytest.approx(read_metrics_csv(run_dir / "validate")["val/accuracy"][-1], abs=1e-6)
