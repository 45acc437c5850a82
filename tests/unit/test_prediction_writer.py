"""`neobert_tasks.prediction_writer` on its own: outputs flattened and gathered, a file per split, written
by the first process only, and the files of an earlier command removed before a new one writes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from neobert_tasks.prediction_writer import (
    MANIFEST,
    PredictionWriter,
    flatten_outputs,
    merge_outputs,
    write_prediction_file,
)
from neobert_tasks.run_directory import RunDirectory


def test_step_outputs_are_flattened_per_key_and_ranks_concatenated():
    steps = [
        {"index": torch.tensor([0, 2]), "scores": torch.tensor([[0.1, 0.9], [0.8, 0.2]])},
        {"index": torch.tensor([4]), "scores": torch.tensor([[0.5, 0.5]])},
    ]
    flat = flatten_outputs(steps)
    assert flat == {
        "index": [0, 2, 4],
        "scores": [pytest.approx([0.1, 0.9]), pytest.approx([0.8, 0.2]), [0.5, 0.5]],
    }
    assert flatten_outputs([]) == {}
    # Outputs a task reads as arrays (QA logits) stay NumPy rows: Python floats take 8 times the memory.
    arrays = flatten_outputs(steps, array_keys=("scores",))
    assert arrays["index"] == [0, 2, 4]
    assert [type(row).__name__ for row in arrays["scores"]] == ["ndarray"] * 3
    assert [row.tolist() for row in arrays["scores"]] == flat["scores"]
    # A rank with no rows (more ranks than batches) adds nothing.
    assert merge_outputs([{"index": [0, 2]}, {}, {"index": [1]}]) == {"index": [0, 2, 1]}
    assert merge_outputs([{}, {}]) == {}


class FilesPerSplit:
    """A task's ``prediction_files``: one file per split listing its indexes; records what it received."""

    def __init__(self):
        self.received = []

    def prediction_files(self, outputs, split_names, datamodule):
        self.received.append((outputs, split_names))
        return {
            f"{split}.txt": " ".join(map(str, output["index"]))
            for split, output in zip(split_names, outputs, strict=True)
        }


def writer_trainer(split_names: list[str], run_dir: Path, is_global_zero: bool = True) -> SimpleNamespace:
    datamodule = SimpleNamespace(split_names_for=lambda stage: split_names)
    return SimpleNamespace(
        datamodule=datamodule, is_global_zero=is_global_zero, callbacks=[RunDirectory(run_dir)]
    )


def test_predictions_of_several_splits_go_to_one_file_each(tmp_path):
    task = FilesPerSplit()
    predictions = [  # per split, per step
        [{"index": torch.tensor([0, 1])}, {"index": torch.tensor([2])}],
        [{"index": torch.tensor([5])}],
    ]
    PredictionWriter(str(tmp_path / "out")).write_on_epoch_end(
        writer_trainer(["matched", "mismatched"], tmp_path), task, predictions, None
    )
    assert task.received == [([{"index": [0, 1, 2]}, {"index": [5]}], ["matched", "mismatched"])]
    assert (tmp_path / "out" / "matched.txt").read_text() == "0 1 2"
    assert (tmp_path / "out" / "mismatched.txt").read_text() == "5"


def test_predictions_of_one_split_go_to_the_run_folder_by_default(tmp_path):
    task = FilesPerSplit()
    predictions = [{"index": torch.tensor([3, 4])}]  # one split: Lightning does not nest per loader
    PredictionWriter().write_on_epoch_end(writer_trainer(["test"], tmp_path / "run"), task, predictions, None)
    assert (tmp_path / "run" / "predictions" / "test.txt").read_text() == "3 4"


def test_other_ranks_write_no_prediction_file(tmp_path):
    predictions = [{"index": torch.tensor([3])}]
    writer = PredictionWriter(str(tmp_path / "out"))
    writer.write_on_epoch_end(
        writer_trainer(["test"], tmp_path, is_global_zero=False), FilesPerSplit(), predictions, None
    )
    assert not (tmp_path / "out").exists()


def predict(writer: PredictionWriter, trainer, split: str) -> None:
    writer.on_predict_start(trainer, None)
    writer.write_on_epoch_end(trainer, FilesPerSplit(), [{"index": torch.tensor([1])}], None)


def test_a_new_command_removes_the_files_of_the_last_one_before_it_predicts(tmp_path, capsys):
    """An interrupted predict left the earlier predict's files beside its own config.yaml, as if its own."""
    trainer = writer_trainer(["test"], tmp_path / "run")
    trainer.state = SimpleNamespace(fn="predict")
    output = tmp_path / "run" / "predictions"
    predict(PredictionWriter(), trainer, "test")
    (output / "notes.md").write_text("mine")  # not written by a predict: kept
    interrupted = PredictionWriter()
    interrupted.on_predict_start(trainer, None)
    interrupted.on_exception(trainer, None, KeyboardInterrupt())
    assert sorted(path.name for path in output.iterdir()) == ["notes.md"]
    expected = f"neobert_tasks: predict interrupted; no predictions were written to {output}.\n"
    assert capsys.readouterr().err == expected
    # validate --prediction_writer.after_validate: one predict per validation split, into the same folder.
    writer = PredictionWriter()
    for split in ("matched", "mismatched"):
        predict(writer, writer_trainer([split], tmp_path / "run"), split)
    assert sorted(path.name for path in output.iterdir()) == [
        MANIFEST,
        "matched.txt",
        "mismatched.txt",
        "notes.md",
    ]
    (output / "matched.txt").write_text("edited by hand")  # changed since written: the user's now
    PredictionWriter().on_predict_start(trainer, None)
    assert sorted(path.name for path in output.iterdir()) == ["matched.txt", "notes.md"]


def test_a_folder_given_as_output_dir_keeps_every_commands_files(tmp_path):
    """One submission folder filled by a predict per GLUE task: each kept the files of the others."""
    for split in ("SST-2", "RTE"):
        predict(
            PredictionWriter(str(tmp_path / "submission")), writer_trainer([split], tmp_path / "run"), split
        )
    assert sorted(path.name for path in (tmp_path / "submission").iterdir()) == [
        MANIFEST,
        "RTE.txt",
        "SST-2.txt",
    ]


def test_a_file_made_piece_by_piece_is_written_whole_or_not_at_all(tmp_path):
    write_prediction_file(tmp_path / "a.jsonl", (f'{{"index": {index}}}\n' for index in range(3)))
    assert (tmp_path / "a.jsonl").read_text() == '{"index": 0}\n{"index": 1}\n{"index": 2}\n'
    write_prediction_file(tmp_path / "b.npy", b"\x93NUMPY")
    assert (tmp_path / "b.npy").read_bytes() == b"\x93NUMPY"

    def failing():
        yield "a line\n"
        raise ValueError("formatting failed")

    with pytest.raises(ValueError, match="formatting failed"):
        write_prediction_file(tmp_path / "c.tsv", failing())
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.jsonl", "b.npy"]  # no half file left
