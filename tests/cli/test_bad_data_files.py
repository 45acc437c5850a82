"""Split files that parse into something else end the command with one sentence and exit status 2.

A CSV row with an unquoted comma used to turn into a silent index column (rows then dropped as "empty
texts", exit 0), and an infinite regression score into a nan loss or correlation. Both runs use the
quickstart's tiny model and the repository's tokenizer on split files written by the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import command_error, quickstart_args

pytestmark = pytest.mark.slow  # runs the command line end to end


def validate_error(capsys, tmp_path: Path, files: dict[str, str]) -> str:
    """``validate`` with the quickstart's model on a data directory holding `files` (name -> text)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for name, text in files.items():
        (data_dir / name).write_text(text, encoding="utf-8")
    arguments = [*quickstart_args(tmp_path), "--data.init_args.data_dir", str(data_dir)]
    return command_error(capsys, "validate", *arguments, tmp_path=tmp_path)


def test_unquoted_comma_in_a_csv_text(capsys, tmp_path):
    train = "sentence,label\ngreat, really great,positive\na boring plot,negative\ni hated it,negative\n"
    validation = "sentence,label\na great movie,positive\nthe actors were fun,positive\n"
    message = validate_error(capsys, tmp_path, {"train.csv": train, "validation.csv": validation})
    assert message == (
        f"Data file '{tmp_path / 'data' / 'train.csv'}' line 2 has 3 fields where the header has 2"
        " (an unquoted comma in the text?); quote the field or fix the row."
    )


def test_infinite_regression_score(capsys, tmp_path):
    train = "sentence,label\na great movie,4.5\na boring plot,1.0\n"
    validation = "sentence,label\nthe actors were fun,3.0\ni hated it,-inf\n"
    message = validate_error(capsys, tmp_path, {"train.csv": train, "validation.csv": validation})
    assert message == (
        f"Row 1 (counting from 0) of split 'validation' ({tmp_path / 'data' / 'validation.csv'}) holds -inf"
        " in column 'label', which must hold finite numbers; fix or remove the row."
    )
