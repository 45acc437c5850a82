"""What a run leaves behind for use elsewhere: ``predict``'s submission files and the exported model.

* ``predict`` writes one TSV per predicted split with the header ``index<TAB>prediction`` and one row per
  example in index order: GLUE tasks under the benchmark's file names and label formats (class ids,
  STS-B scores, class names for MNLI/QNLI/RTE), other datasets as ``<split>.tsv`` with class names.
* The export (``<run dir>/export``) is the best checkpoint's model: it reloads with the ``transformers``
  Auto classes (after ``import neobert_tasks``), gives the training module's logits, carries the class
  names as ``config.id2label``, predicts what ``predict`` wrote, and brings its tokenizer along.

The quickstart runs need only the repository; the GLUE runs use the shared copy and skip without it.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import neobert_tasks  # noqa: F401 - registers NeoBERT with the transformers Auto classes
from neobert_tasks.data.glue import GLUE_TASKS
from neobert_tasks.tasks.base import MODEL_INPUT_KEYS
from neobert_tasks.tasks.sequence_classification import GLUE_SUBMISSION_NAMES
from tests.cli.helpers import CONFIGS, build_cli, cache_args, glue_args
from tests.conftest import REPO_ROOT, shared_path

pytestmark = pytest.mark.slow  # runs the command line end to end

QUICKSTART_ARGS = [
    "--config",
    str(CONFIGS / "quickstart.yaml"),
    # Absolute paths: the config's own are relative to the repository root, the test's cwd may differ.
    "--data.init_args.tokenizer",
    str(REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased"),
    "--data.init_args.data_dir",
    str(REPO_ROOT / "data" / "quickstart"),
    "--trainer.enable_progress_bar",
    "false",
    "--trainer.enable_model_summary",
    "false",
]
# Two short epochs, so that the best checkpoint (the exported one) need not be the last.
SHORT_FIT = [
    "--trainer.max_epochs",
    "2",
    "--trainer.limit_train_batches",
    "6",
    "--trainer.limit_val_batches",
    "3",
]
QUICKSTART_LABELS = ("negative", "positive")
QUICKSTART_VALIDATION_ROWS = 400

# GLUE tasks whose submission formats differ: class ids, scores, class names (two and three of them).
PREDICTED_TASKS = ("sst2", "stsb", "rte", "qnli", "mnli")
PREDICTED_ROWS = 40


def read_submission(path: Path) -> list[tuple[int, str]]:
    """The (index, prediction) rows of a submission file, after checking its header and row shape."""
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    assert rows[0] == ["index", "prediction"], f"{path.name} header: {rows[0]}"
    assert all(len(row) == 2 for row in rows[1:]), f"{path.name} has rows without exactly two fields"
    indices = [int(index) for index, _ in rows[1:]]
    assert indices == sorted(set(indices)), f"{path.name}: indices not strictly increasing"
    return [(int(index), prediction) for index, prediction in rows[1:]]


def first_loader(loaders):
    """The first split's loader (MNLI has two: matched, then mismatched)."""
    return loaders[0] if isinstance(loaders, list) else loaders


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in batch.items() if key in MODEL_INPUT_KEYS and key != "labels"}


@pytest.fixture(scope="module")
def one_thread():
    """The tiny model gains nothing from a second thread, and on a busy machine two make runs far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["quickstart", "mnli"])
def trained(request, tmp_path_factory, one_thread):
    """A short fit, then ``predict`` with its best checkpoint: the quickstart (names from the data) and
    GLUE MNLI (three names from the task table; the matched split is the first of its two predicted)."""
    tmp_path = tmp_path_factory.mktemp(request.param)
    if request.param == "quickstart":
        args = [*QUICKSTART_ARGS, *cache_args(tmp_path)]
        labels, submission = QUICKSTART_LABELS, "validation.tsv"
        indices = list(range(QUICKSTART_VALIDATION_ROWS))  # no idx column: the row numbers
    else:
        args = [*glue_args("mnli", tmp_path), "--data.init_args.limit_eval_samples", str(PREDICTED_ROWS)]
        labels, submission = GLUE_TASKS["mnli"].label_names, "MNLI-m.tsv"
        split = pd.read_parquet(shared_path("data", "glue", "mnli", "validation_matched.parquet"))
        indices = sorted(split["idx"].head(PREDICTED_ROWS))
    fit = build_cli("fit", *args, *SHORT_FIT)
    run_dir = Path(fit.trainer.log_dir)
    summary = json.loads((run_dir / "metrics.json").read_text())
    best = ["--ckpt_path", summary["best_checkpoint"], "--trainer.limit_predict_batches", "1.0"]
    predict = build_cli("predict", *args, *best)
    return SimpleNamespace(
        fit=fit,
        predict=predict,
        export_dir=run_dir / "export",
        best_checkpoint=summary["best_checkpoint"],
        submission=Path(predict.trainer.log_dir) / "predictions" / submission,
        indices=indices,
        labels=tuple(labels),
    )


# --------------------------------------------------------------------------------------------------------
# Submission files.


def test_predict_names_the_class_of_every_predicted_row(trained):
    rows = read_submission(trained.submission)
    assert [index for index, _ in rows] == trained.indices
    assert {prediction for _, prediction in rows} <= set(trained.labels)


@pytest.mark.parametrize("task", PREDICTED_TASKS)
def test_glue_predict_writes_the_benchmark_submission_file(task, tmp_path, one_thread):
    args = [
        *glue_args(task, tmp_path),
        "--trainer.limit_predict_batches",
        "1.0",
        "--data.init_args.limit_eval_samples",
        str(PREDICTED_ROWS),
        "--data.init_args.eval_batch_size",
        "16",
    ]
    cli = build_cli("predict", *args)
    spec = GLUE_TASKS[task]
    output_dir = Path(cli.trainer.log_dir) / "predictions"
    # The shared copies have no test split: the (first) validation split is predicted.
    name = GLUE_SUBMISSION_NAMES[task]
    names = [name, "MNLI-mm"] if task == "mnli" else [name]  # MNLI: matched and mismatched
    assert sorted(path.name for path in output_dir.glob("[!.]*")) == sorted(
        f"{stem}.{suffix}" for stem in names for suffix in ("jsonl", "tsv")
    )
    rows = read_submission(output_dir / f"{GLUE_SUBMISSION_NAMES[task]}.tsv")

    split = pd.read_parquet(shared_path("data", "glue", task, f"{spec.validation_splits[0]}.parquet"))
    assert [index for index, _ in rows] == sorted(split["idx"].head(PREDICTED_ROWS))
    predictions = [prediction for _, prediction in rows]
    if task == "stsb":
        assert all(math.isfinite(float(value)) for value in predictions)
    elif task in ("mnli", "qnli", "rte"):
        assert set(predictions) <= set(spec.label_names)
    else:
        assert set(predictions) <= {str(label) for label in range(spec.num_labels)}


# --------------------------------------------------------------------------------------------------------
# The exported model and tokenizer.


def test_export_is_the_best_checkpoints_model(trained):
    exported = load_file(trained.export_dir / "model.safetensors")
    checkpoint = torch.load(trained.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    best = {
        key.removeprefix("model."): value for key, value in checkpoint.items() if key.startswith("model.")
    }
    assert set(exported) <= set(best)
    for key, value in exported.items():
        assert torch.equal(value, best[key]), key


def test_exported_model_reloads_with_the_same_logits_and_label_names(trained):
    model = AutoModelForSequenceClassification.from_pretrained(trained.export_dir).eval()
    module = trained.fit.model.eval()  # holds the best checkpoint's weights after the export
    assert type(model) is type(module.model)
    assert model.config.id2label == dict(enumerate(trained.labels))
    assert model.config.label2id == {name: index for index, name in enumerate(trained.labels)}

    batch = next(iter(first_loader(trained.fit.datamodule.val_dataloader())))
    with torch.no_grad():
        expected = module.model(**model_inputs(batch)).logits
        reloaded = model(**model_inputs(batch)).logits
    assert reloaded.shape == (batch["input_ids"].shape[0], len(trained.labels))
    assert torch.allclose(reloaded, expected, rtol=0, atol=1e-6), (reloaded - expected).abs().max()


def test_exported_model_predicts_what_predict_wrote(trained):
    model = AutoModelForSequenceClassification.from_pretrained(trained.export_dir).eval()
    written = dict(read_submission(trained.submission))
    predicted = {}
    with torch.no_grad():
        for batch in first_loader(trained.predict.datamodule.predict_dataloader()):
            classes = model(**model_inputs(batch)).logits.argmax(-1)
            predicted.update(zip(batch["example_index"].tolist(), classes.tolist(), strict=True))
    assert written == {index: model.config.id2label[label] for index, label in predicted.items()}


def test_exported_tokenizer_reloads_and_encodes_like_the_training_one(trained):
    tokenizer = AutoTokenizer.from_pretrained(trained.export_dir)
    original = trained.fit.datamodule.tokenizer
    assert len(tokenizer) == len(original) <= trained.fit.model.model.config.vocab_size
    assert tokenizer.pad_token_id == original.pad_token_id
    texts = ["A gorgeous, witty film.", "the plot is a mess , and it 's not funny"]
    questions, answers = ["Is it good?"], ["It is a gorgeous film."]
    assert tokenizer(texts)["input_ids"] == original(texts)["input_ids"]
    assert tokenizer(questions, answers)["input_ids"] == original(questions, answers)["input_ids"]
