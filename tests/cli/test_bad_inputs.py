"""Mistakes in the data end a command with one sentence naming the culprit and exit status 2.

Each test runs ``main`` in-process, points it at a small split directory written by the test when the data
is the mistake, and checks the message, that no traceback was printed and that no ``metrics.json`` or
``export/`` was written (`command_error`). The GLUE tests use the shared GLUE copy (skipped without
``../shared``); the others use the quickstart's tiny model and the tokenizer shipped with the repository.
Mistakes in the config, the model or a checkpoint are in ``test_bad_config.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.cli.helpers import (
    CONFIGS,
    CPU,
    DEBUG,
    TINY,
    build_cli,
    cache_args,
    command_error,
    glue_args,
    quickstart_args,
)
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # runs the command line end to end

SENTENCES = ["a great movie", "a boring plot", "the actors were fun", "i hated it"]
TOKENIZER = REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased"


def write_split(directory: Path, split: str, frame: pd.DataFrame) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / f"{split}.parquet", index=False)


def write_splits(tmp_path: Path, splits: dict[str, pd.DataFrame]) -> Path:
    data_dir = tmp_path / "data"
    for split, frame in splits.items():
        write_split(data_dir, split, frame)
    return data_dir


def sst2_rows(**columns) -> pd.DataFrame:
    """Four SST-2 rows (``sentence``, ``label``, ``idx``); keyword arguments replace or add columns."""
    frame = pd.DataFrame({"sentence": SENTENCES, "label": [1, 0, 1, 0], "idx": range(len(SENTENCES))})
    for name, values in columns.items():
        if values is None:
            frame = frame.drop(columns=name)
        else:
            frame[name] = values
    return frame


def fit_error(capsys, tmp_path: Path, task: str, *overrides: str) -> str:
    """Run ``fit`` on GLUE ``task`` with ``overrides``; return the message after `command_error`'s checks."""
    return command_error(capsys, "fit", *glue_args(task, tmp_path), *overrides, tmp_path=tmp_path)


def fit_error_on_data(capsys, tmp_path: Path, splits: dict[str, pd.DataFrame], task: str = "sst2") -> str:
    """``fit_error`` with ``data_dir`` pointing at the given split files."""
    data_dir = write_splits(tmp_path, splits)
    return fit_error(capsys, tmp_path, task, "--data.init_args.data_dir", str(data_dir))


def quickstart_error(capsys, tmp_path: Path, splits: dict[str, pd.DataFrame], *overrides: str) -> str:
    """``validate`` with the quickstart's model on the given split files (repository files only)."""
    data_dir = write_splits(tmp_path, splits)
    arguments = [*quickstart_args(tmp_path), "--data.init_args.data_dir", str(data_dir), *overrides]
    return command_error(capsys, "validate", *arguments, tmp_path=tmp_path)


def sentiment_rows(sentences: list[str | None]) -> pd.DataFrame:
    """Rows of the quickstart's columns (``sentence``, ``label`` as class names)."""
    labels = ["positive", "negative"] * (len(sentences) // 2) + ["positive"] * (len(sentences) % 2)
    return pd.DataFrame({"sentence": sentences, "label": labels})


def test_unknown_task_name(capsys, tmp_path):
    message = fit_error(capsys, tmp_path, "cola", "--data.init_args.task_name", "colaa")
    assert "Unknown GLUE task 'colaa'" in message
    assert "cola, sst2" in message  # the valid names are listed


def test_missing_data_directory(capsys, tmp_path):
    missing = tmp_path / "no_such_directory"
    message = fit_error(capsys, tmp_path, "sst2", "--data.init_args.data_dir", str(missing))
    assert f"Data directory '{missing}' (data.init_args.data_dir) does not exist" in message


# Task configs other than GLUE's, with what it takes to build them from local files.
DATAMODULE_CONFIGS = {
    "text_classification": [CONFIGS / "quickstart.yaml"],
    "token_classification": [CONFIGS / "conll2003.yaml"],
    "question_answering": [CONFIGS / "squad.yaml"],
    "long_document": [CONFIGS / "long_document.yaml"],
    "text": [CONFIGS / "mlm.yaml", "--data.init_args.dataset", "null"],
}


@pytest.mark.parametrize("datamodule", list(DATAMODULE_CONFIGS))
def test_missing_data_directory_of_every_datamodule(capsys, tmp_path, datamodule):
    config, *extra = DATAMODULE_CONFIGS[datamodule]
    missing = tmp_path / "no_such_directory"
    message = command_error(
        capsys, "fit", "--config", config, "--config", TINY, "--config", DEBUG, "--config", CPU, *extra,
        "--data.init_args.tokenizer", TOKENIZER, "--data.init_args.data_dir", missing, *cache_args(tmp_path),
        tmp_path=tmp_path,
    )  # fmt: skip
    assert message == (
        f"Data directory '{missing}' (data.init_args.data_dir) does not exist or is not a directory."
    )


def test_predict_file_that_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "no_such_file.txt"
    message = command_error(
        capsys, "predict", "--config", CONFIGS / "conll2003.yaml", "--config", TINY, "--config", CPU,
        "--data.init_args.tokenizer", TOKENIZER, "--data.init_args.label_names", "[O, B-PER, I-PER]",
        "--data.init_args.predict_file", missing, *cache_args(tmp_path), tmp_path=tmp_path,
    )  # fmt: skip
    assert message == f"Predict file '{missing}' does not exist."


def test_missing_validation_split(capsys, tmp_path):
    message = quickstart_error(capsys, tmp_path, {"train": sentiment_rows(SENTENCES)})
    assert message == (
        f"Data directory '{tmp_path / 'data'}' has no files for splits ['validation'] (splits found: train;"
        " files are named <split>.parquet|csv|tsv|json|jsonl)."
    )


def test_named_split_that_does_not_exist(capsys, tmp_path):
    rows = sentiment_rows(SENTENCES)
    splits = {"train": rows, "validation": rows}
    message = quickstart_error(capsys, tmp_path, splits, "--data.init_args.train_split", "training")
    assert message.startswith(f"Data directory '{tmp_path / 'data'}' has no files for splits ['training']")
    assert "(splits found: train, validation;" in message


def test_missing_text_column(capsys, tmp_path):
    rows = sst2_rows(sentence=None, text=SENTENCES)
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": rows})
    assert "Column 'sentence' is missing from" in message
    assert "train.parquet (columns present: label, idx, text)" in message


def test_empty_split(capsys, tmp_path):
    message = fit_error_on_data(capsys, tmp_path, {"train": sst2_rows(), "validation": sst2_rows().head(0)})
    assert "Split 'validation'" in message
    assert "has no rows" in message


def test_label_outside_the_model_range(capsys, tmp_path):
    rows = sst2_rows(label=[1, 0, 5, 0])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert (
        "Label 5 in row 2 of split 'train' (" in message and "is outside the valid range [0, 2)." in message
    )


def test_float_labels_for_classification(capsys, tmp_path):
    rows = sst2_rows(label=[1.0, 0.0, 0.5, 0.0])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert "Label column 'label'" in message
    assert "does not fit single_label_classification" in message


def test_unknown_label_names(capsys, tmp_path):
    rows = sst2_rows(label=["positive", "negative", "good", "negative"])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert "Label 'good' in row 2 of split 'train' (" in message
    assert message.endswith("train.parquet) is not one of the label names ['negative', 'positive'].")


def test_a_label_only_validation_has_is_named_with_its_file(capsys, tmp_path):
    rows = sst2_rows(label=["positive", "negative", "neutral", "negative"])
    message = fit_error_on_data(capsys, tmp_path, {"train": sst2_rows(), "validation": rows})
    assert message.startswith("Label 'neutral' in row 2 of split 'validation' (")
    assert message.endswith("validation.parquet) is not one of the label names ['negative', 'positive'].")


def test_a_missing_label_is_named_with_its_row_and_file(capsys, tmp_path):
    rows = sst2_rows(label=["positive", None, "negative", None])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert message.startswith("Row 1 (counting from 0) of split 'train' (")
    assert message.endswith("train.parquet) has no label in column 'label' (2 rows without one).")


def test_text_labels_for_regression(capsys, tmp_path):
    pairs = {"sentence1": SENTENCES, "sentence2": SENTENCES[::-1], "idx": range(len(SENTENCES))}
    rows = pd.DataFrame({**pairs, "label": ["high", "low", "high", "low"]})
    scores = pd.DataFrame({**pairs, "label": [4.5, 1.0, 3.2, 0.0]})
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": scores}, task="stsb")
    assert "Label column 'label'" in message
    assert "does not fit regression" in message


def test_numbers_in_the_text_column(capsys, tmp_path):
    rows = sst2_rows(sentence=[1, 2, 3, 4])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert "Column 'sentence'" in message
    assert "must hold text" in message


def test_ner_tag_outside_the_label_names(capsys, tmp_path):
    rows = pd.DataFrame(
        {"tokens": [["Paris", "is", "nice"], ["I", "saw", "Bob"]], "ner_tags": [[1, 0, 0], [0, 0, 7]]}
    )
    data_dir = write_splits(tmp_path, {"train": rows, "validation": rows})
    message = command_error(
        capsys, "fit", "--config", CONFIGS / "conll2003.yaml", "--config", TINY, "--config", DEBUG,
        "--config", CPU, "--data.init_args.tokenizer", TOKENIZER, "--data.init_args.data_dir", data_dir,
        "--data.init_args.label_names", "[O, B-LOC, I-LOC]", *cache_args(tmp_path), tmp_path=tmp_path,
    )  # fmt: skip
    assert message.startswith("Tag 7 in row 1 of ")
    assert (
        "(column 'ner_tags') is not one of the 3 label names ['O', 'B-LOC', 'I-LOC'] (ids 0 to 2)." in message
    )


def test_tokenizer_directory_that_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "no_such_tokenizer"
    rows = sentiment_rows(SENTENCES)
    message = quickstart_error(
        capsys, tmp_path, {"train": rows, "validation": rows}, "--data.init_args.tokenizer", str(missing)
    )
    assert message == f"Tokenizer directory '{missing}' does not exist."


def test_tokenizer_that_is_neither_a_directory_nor_on_the_hub(capsys, tmp_path):
    rows = sentiment_rows(SENTENCES)
    splits = {"train": rows, "validation": rows}
    message = quickstart_error(capsys, tmp_path, splits, "--data.init_args.tokenizer", "no_such_tokenizer")
    # Offline (the tests set HF_HUB_OFFLINE): one sentence with the way out, and no retries before it.
    assert message == (
        "Could not load tokenizer 'no_such_tokenizer': no such directory, the hub is not reachable (offline)"
        " and there is no cached copy; give a tokenizer folder with --data.init_args.tokenizer."
    )


def test_tokenizer_directory_without_tokenizer_files(capsys, tmp_path):
    """An empty folder gave transformers' "Couldn't instantiate the backend tokenizer from one of:", cut."""
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    rows = sentiment_rows(SENTENCES)
    message = quickstart_error(
        capsys, tmp_path, {"train": rows, "validation": rows}, "--data.init_args.tokenizer", str(empty)
    )
    assert message == (
        f"Tokenizer directory '{empty}' holds none of tokenizer.json, tokenizer_config.json, vocab.txt,"
        " vocab.json, spiece.model; give a folder that save_pretrained wrote (a run's export/ has one)."
    )


def test_tokenizer_folder_transformers_cannot_read_gets_its_whole_explanation(capsys, tmp_path):
    broken = tmp_path / "config_only"
    broken.mkdir()
    (broken / "tokenizer_config.json").write_text("{}")
    rows = sentiment_rows(SENTENCES)
    message = quickstart_error(
        capsys, tmp_path, {"train": rows, "validation": rows}, "--data.init_args.tokenizer", str(broken)
    )
    assert message.startswith(f"Could not load tokenizer '{broken}' from its local directory: ")
    # transformers' reason ends its first line in "from one of:"; the list that follows is kept.
    assert "from one of: (1) " in message and not message.endswith(":")


def test_empty_texts_are_refused_with_their_row(capsys, tmp_path):
    validation = sentiment_rows(["fine", "", "good", None])
    splits = {"train": sentiment_rows(SENTENCES), "validation": validation}
    message = quickstart_error(capsys, tmp_path, splits, "--data.init_args.empty_texts", "error")
    origin = tmp_path / "data" / "validation.parquet"
    assert message == (
        f"Row 1 (counting from 0) of split 'validation' ({origin}) has an empty or null text in column"
        " 'sentence'; fix the data, or set data.init_args.empty_texts to skip to drop such rows."
    )


def test_empty_texts_are_skipped_with_a_warning(tmp_path):
    validation = sentiment_rows(["fine", "  ", "good", None, "bad", "great"])
    data_dir = write_splits(tmp_path, {"train": sentiment_rows(SENTENCES), "validation": validation})
    arguments = [*quickstart_args(tmp_path), "--data.init_args.data_dir", str(data_dir)]
    with pytest.warns(
        UserWarning, match=r"Skipped 2 of 6 rows of split 'validation' with an empty or null text"
    ) as warned:
        cli = build_cli("validate", *arguments)
    # Once, though prepare_data and setup both read the split.
    assert sum("Skipped 2 of 6 rows" in str(warning.message) for warning in warned) == 1
    # The rows kept keep their row numbers in the file, which predictions are written by.
    assert cli.datamodule.datasets["validation"]["example_index"] == [0, 2, 4, 5]
    assert "val/accuracy" in cli.trainer.callback_metrics
