"""Mistakes in the config or the data end ``fit`` with one sentence naming the culprit and exit status 2.

Each test runs ``main`` in-process with the tiny model on SST-2 (or STS-B), points it at a small split
directory written by the test when the data is the mistake, and checks the message and that no traceback
was printed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.cli.helpers import glue_args, run_cli

SENTENCES = ["a great movie", "a boring plot", "the actors were fun", "i hated it"]


def write_split(directory: Path, split: str, frame: pd.DataFrame) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(directory / f"{split}.parquet", index=False)


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
    """Run ``fit`` on GLUE ``task`` with ``overrides``; return stderr after checking it exits with 2."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli("fit", *glue_args(task, tmp_path), *overrides, tmp_path=tmp_path)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    # The message is the last line; progress bars of the data loading may come before it.
    message = error.strip().splitlines()[-1]
    assert message.startswith("neobert_tasks: error: ")
    return message


def fit_error_on_data(capsys, tmp_path: Path, splits: dict[str, pd.DataFrame], task: str = "sst2") -> str:
    """``fit_error`` with ``data_dir`` pointing at the given split files."""
    data_dir = tmp_path / "data"
    for split, frame in splits.items():
        write_split(data_dir, split, frame)
    return fit_error(capsys, tmp_path, task, "--data.init_args.data_dir", str(data_dir))


def test_unknown_task_name(capsys, tmp_path):
    message = fit_error(capsys, tmp_path, "cola", "--data.init_args.task_name", "colaa")
    assert "Unknown GLUE task 'colaa'" in message
    assert "cola, sst2" in message  # the valid names are listed


def test_missing_data_directory(capsys, tmp_path):
    missing = tmp_path / "no_such_directory"
    message = fit_error(capsys, tmp_path, "sst2", "--data.init_args.data_dir", str(missing))
    assert f"Data directory '{missing}' does not exist" in message


def test_missing_text_column(capsys, tmp_path):
    rows = sst2_rows(sentence=None, text=SENTENCES)
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": rows})
    assert "Column 'sentence' is missing from" in message
    assert "train.parquet" in message


def test_empty_split(capsys, tmp_path):
    message = fit_error_on_data(capsys, tmp_path, {"train": sst2_rows(), "validation": sst2_rows().head(0)})
    assert "Split 'validation'" in message
    assert "has no rows" in message


def test_label_outside_the_model_range(capsys, tmp_path):
    rows = sst2_rows(label=[1, 0, 5, 0])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert "Label 5 in split 'train' is outside the valid range [0, 2)" in message


def test_float_labels_for_classification(capsys, tmp_path):
    rows = sst2_rows(label=[1.0, 0.0, 0.5, 0.0])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert "Label column 'label'" in message
    assert "does not fit single_label_classification" in message


def test_unknown_label_names(capsys, tmp_path):
    rows = sst2_rows(label=["positive", "negative", "good", "negative"])
    message = fit_error_on_data(capsys, tmp_path, {"train": rows, "validation": sst2_rows()})
    assert "Label 'good' in split 'train' is not one of the label names ['negative', 'positive']" in message


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
