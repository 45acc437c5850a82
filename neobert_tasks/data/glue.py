"""GLUE benchmark datamodule: the nine tasks of hub `nyu-mll/glue`, from the hub or a local copy.

Everything the model must know when it is built (number of labels, problem type, label names, validation
splits, the metric to select checkpoints on) comes from the task table below, so it is available right
after `__init__` without reading any data. Loaded data is checked against the table in `setup`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from neobert_tasks.data.checks import check_text_columns, require_columns
from neobert_tasks.data.labels import REGRESSION, SINGLE_LABEL, LabelSchema, check_labels, label_encoding
from neobert_tasks.data.sources import DataError, MissingDataError, find_split_files
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.data.text_classification import LabelledTextDataModule

GLUE_HUB_ID = "nyu-mll/glue"


@dataclass(frozen=True)
class GLUETask:
    """How one GLUE task is laid out and scored (names follow hub `nyu-mll/glue`)."""

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...]
    main_metric: str
    problem_type: str = SINGLE_LABEL
    validation_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)

    @property
    def num_labels(self) -> int:
        return LabelSchema(self.problem_type, self.label_names).num_labels


GLUE_TASKS: dict[str, GLUETask] = {
    task.name: task
    for task in [
        GLUETask("cola", ("sentence",), ("unacceptable", "acceptable"), "matthews_correlation"),
        GLUETask("sst2", ("sentence",), ("negative", "positive"), "accuracy"),
        GLUETask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), "f1"),
        GLUETask("stsb", ("sentence1", "sentence2"), ("score",), "pearson", problem_type=REGRESSION),
        GLUETask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), "f1"),
        GLUETask(
            "mnli",
            ("premise", "hypothesis"),
            ("entailment", "neutral", "contradiction"),
            "accuracy",
            validation_splits=("validation_matched", "validation_mismatched"),
            test_splits=("test_matched", "test_mismatched"),
        ),
        GLUETask("qnli", ("question", "sentence"), ("entailment", "not_entailment"), "accuracy"),
        GLUETask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), "accuracy"),
        GLUETask("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment"), "accuracy"),
    ]
}


class GLUEDataModule(LabelledTextDataModule):
    """One GLUE task, tokenized for NeoBERT (defaults follow the NeoBERT paper's GLUE recipe).

    Args:
        task_name: GLUE task: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte or wnli.
        data_dir: directory with the task's `<split>.parquet|csv|json|jsonl` files (or a GLUE root holding
            `<task_name>/`); None loads hub `nyu-mll/glue` with config `task_name`.
        max_length: longest tokenized sequence; longer inputs are truncated.
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    def __init__(
        self,
        task_name: str,
        data_dir: str | None = None,
        max_length: int = 1024,
        **kwargs: Any,
    ) -> None:
        super().__init__(max_length=max_length, **kwargs)
        if task_name not in GLUE_TASKS:
            raise DataError(f"Unknown GLUE task '{task_name}'; valid names are {', '.join(GLUE_TASKS)}.")
        self.task = GLUE_TASKS[task_name]
        self.task_name = task_name
        self.text_columns, self.label_column = self.task.text_columns, "label"
        # Class names in class-id order, as in the hub dataset's `label` feature (STS-B: one score).
        self.label_schema = LabelSchema(self.task.problem_type, self.task.label_names)
        # Hub `nyu-mll/glue` with the task as its config, unless data_dir holds a local copy.
        self.set_data_source(GLUE_HUB_ID, task_name, self._task_directory(data_dir, task_name))

    @staticmethod
    def _task_directory(data_dir: str | None, task_name: str) -> str | None:
        """Accept both the task's own directory and a GLUE root with one sub-directory per task."""
        if data_dir is None:
            return None
        task_subdirectory = Path(data_dir) / task_name
        if task_subdirectory.is_dir() and not any(Path(data_dir).glob("train.*")):
            return str(task_subdirectory)
        if Path(data_dir).is_dir() and not find_split_files(data_dir):
            # Neither layout: say so before anything else is read (or warned about) from it.
            raise MissingDataError(
                f"Data directory '{data_dir}' holds neither a GLUE root's '{task_name}/' folder nor"
                f" {task_name}'s own split files (train.parquet, validation.parquet, …)."
            )
        return data_dir

    # ----------------------------------------------------------------------------------------------------
    # Task properties, available right after __init__ for LightningCLI argument linking.

    @property
    def main_metric(self) -> str:
        """Metric GLUE reports for the task and checkpoints are selected on."""
        return self.task.main_metric

    @property
    def configured_validation_splits(self) -> list[str]:
        """MNLI: matched, then mismatched; the others: validation."""
        return list(self.task.validation_splits)

    @property
    def configured_test_splits(self) -> list[str]:
        """The hub's test splits (labels -1); usually absent from local copies."""
        return list(self.task.test_splits)

    # ----------------------------------------------------------------------------------------------------
    # TokenizedDataModule hooks.

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        is_predict_file = split_name == PREDICT_SPLIT  # texts only, checked as they were read
        require_columns(dataset, [*self.task.text_columns, None if is_predict_file else "label"], origin)
        check_text_columns(dataset, self.task.text_columns, origin)
        if is_predict_file:
            return
        feature = dataset.features["label"]
        encoding = label_encoding(self.problem_type, feature, "label", origin)
        names = getattr(feature, "names", None)
        if names is not None and list(names) != self.label_names:
            raise DataError(
                f"Label names {list(names)} of {origin} differ from GLUE {self.task_name}'s"
                f" {self.label_names}."
            )
        is_test = split_name in self.task.test_splits
        check_labels(
            dataset, "label", encoding, self.label_names, split_name, allow_unlabeled=is_test, origin=origin
        )
