"""Sequence (and sequence-pair) classification or regression on any dataset with a text and a label column.

The label schema (problem type, number of labels, label names) is needed when the model is built, before
any data is tokenized, so `TextClassificationDataModule` infers it at `__init__` from the training split's
label column unless it is given explicitly:

- `ClassLabel`, integer or string labels -> single-label classification (string labels map to sorted names),
- float labels -> regression with one output,
- list labels (of class ids, names, or a multi-hot vector) -> multi-label classification; labels become
  float multi-hot vectors.

Label kinds, encodings and checks live in `labels.py`; loading and encoding (`LabelledTextDataModule`) are
shared with `GLUEDataModule`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.base import EncodeFunction, TokenizedDataModule
from neobert_tasks.data.checks import check_text_columns, require_columns, require_finite
from neobert_tasks.data.hub_or_local import HubOrLocalSource
from neobert_tasks.data.keys import EXAMPLE_INDEX, SOURCE_INDEX_COLUMN
from neobert_tasks.data.labels import (
    MULTI_LABEL,
    PROBLEM_TYPES,
    REGRESSION,
    SINGLE_LABEL,
    LabelSchema,
    check_label_names,
    check_labels,
    encode_labels,
    infer_label_schema,
    label_encoding,
    label_kind,
    names_for_integers,
    names_text,
    numbers_other_than_ids,
    warn_of_absent_class_ids,
)
from neobert_tasks.data.predict_text import load_text_file
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.splits import PREDICT_SPLIT


def encode_sentences(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    text_columns: tuple[str, ...],
    max_length: int,
    **label_options: Any,
) -> dict[str, list]:
    """Tokenize one or two text columns (truncating the longer text of a pair first) and encode labels
    (`label_options`: the arguments of `encode_labels`)."""
    encoded = tokenizer(
        *[batch[column] for column in text_columns],
        truncation=True,
        max_length=max_length,
        return_token_type_ids=False,  # NeoBERT has no segment embeddings
    )
    labels = encode_labels(batch, **label_options)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], **labels}


class LabelledTextDataModule(HubOrLocalSource, TokenizedDataModule):
    """What text classification and GLUE share: one or two texts (`text_columns`) and a label
    (`label_column`) per row, from a hub dataset or split files, encoded by `encode_sentences`.

    Subclasses set the two columns and the `label_schema` in `__init__`, and provide `check_split`.

    Args:
        predict_file: texts for `predict` instead of a split: a .txt file with one text per line, or a
            .csv/.tsv/.jsonl/.parquet file with the text column(s) (any name for a file of one column).
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    sort_eval_by_length = True  # predictions are written back by example index
    # Whether the class names were read from the training split's text labels (`split_encoding`).
    names_from_strings = False
    text_columns: tuple[str, ...]
    # Text columns whose missing values the encoder leaves out instead of refusing (a long document's title).
    optional_text_columns: tuple[str, ...] = ()
    label_column: str
    label_schema: LabelSchema

    def __init__(self, predict_file: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.predict_file = predict_file

    # ----------------------------------------------------------------------------------------------------
    # Label schema, available right after __init__ for LightningCLI argument linking.

    @property
    def problem_type(self) -> str:
        """single_label_classification, multi_label_classification or regression."""
        return self.label_schema.problem_type

    @property
    def num_labels(self) -> int:
        """Number of model outputs (1 for regression)."""
        return self.label_schema.num_labels

    @property
    def label_names(self) -> list[str]:
        """Class names in class-id order (for regression, the name of the score)."""
        return list(self.label_schema.label_names)

    # ----------------------------------------------------------------------------------------------------
    # TokenizedDataModule hooks.

    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        raw, origins = super().load_raw_splits(split_names)
        # Float labels (scores, multi-hot vectors): checked on the whole split as loaded, so the row named is
        # the row of the file (or hub split).
        for name, dataset in raw.items():
            require_finite(dataset, self.label_column, name, origins[name])
        return raw, origins

    def empty_text_columns(self) -> Sequence[str]:
        return self.text_columns

    def load_predict_file(self) -> datasets.Dataset:
        return load_text_file(
            self.predict_file, self.cache_dir, self.text_columns, self.optional_text_columns
        )

    def predict_texts(self, split_name: str) -> dict[int, list[str]]:
        """Per example index, the text (or pair) of a predicted split's row: what prediction files show."""
        rows = self.raw_examples[split_name]
        # The example index as `encode_with_index` keeps it: given to rows when some were skipped, else the
        # dataset's own index column, else the row number.
        index_column = next((c for c in (EXAMPLE_INDEX, SOURCE_INDEX_COLUMN) if c in rows.column_names), None)
        indices = rows[index_column][:] if index_column else range(len(rows))
        # `[:]` reads a whole column into a list at once; indexing the lazy column took 0.5 ms a row.
        columns = [rows[column][:] for column in self.text_columns]
        return {index: [column[row] for column in columns] for row, index in enumerate(indices)}

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> EncodeFunction:
        return functools.partial(
            encode_sentences,
            tokenizer=self.tokenizer,
            text_columns=self.text_columns,
            max_length=self.max_length,
            **self.label_options(dataset, split_name),
        )

    def label_options(self, dataset: datasets.Dataset, split_name: str = "") -> dict[str, Any]:
        """The encode function's arguments that turn `dataset`'s labels into targets (none without labels;
        a predict file's label column is not read: predict scores nothing)."""
        labelled = self.label_column in dataset.column_names and split_name != PREDICT_SPLIT
        return {
            "label_column": self.label_column if labelled else None,
            "encoding": self.split_encoding(dataset.features[self.label_column], "") if labelled else "",
            "label_to_index": {name: index for index, name in enumerate(self.label_names)},
            "num_labels": self.num_labels,
        }

    def split_encoding(self, feature: object, origin: str) -> str:
        """How a split's labels of type `feature` become targets: integers are class ids, unless the class
        names are numbers other than the ids ("1", "2", "3"), then integers are those names
        (`names_for_integers`). Read from the names alone, so a fit and a later evaluation agree."""
        encoding = label_encoding(self.problem_type, feature, self.label_column, origin)
        integers = label_kind(feature) in ("int", "list_int") and "bool" not in str(feature)
        if integers and numbers_other_than_ids(self.label_names):
            return names_for_integers(encoding)
        ids = [str(index) for index in range(len(self.label_names))]
        if integers and self.names_from_strings and list(self.label_names) != ids:
            # Integers against names sorted from training's text labels: which integer is which class is a
            # guess (the sorted order), and a wrong one scores every row against the wrong class.
            raise DataError(
                f"Labels of {origin or 'a split'} are integers, but the class names come from the training"
                f" split's text labels {names_text(self.label_names, self.label_column)}: write the labels"
                " as those names, or set data.init_args.label_names to the names in integer order."
            )
        return encoding


class TextClassificationDataModule(LabelledTextDataModule):
    """Classify (or score) a text or text pair, from a hub dataset or a directory of split files.

    Args:
        dataset: hub dataset id loaded with `datasets.load_dataset`; give this or `data_dir`.
        dataset_config: configuration (subset) name of the hub dataset, if it has several.
        data_dir: local directory with `<split>.parquet|csv|tsv|json|jsonl` files; give this or `dataset`.
        text_column: column holding the text.
        text_pair_column: column holding the second text of a pair; None for single texts.
        label_column: column holding the label (class id, class name, float score or list of labels).
        problem_type: single_label_classification, multi_label_classification or regression; None infers it.
        num_labels: number of classes; None infers it from the training labels.
        label_names: class names in class-id order; None takes them from the data (sorted for string labels).
        train_split: name of the training split.
        validation_split: name of the validation split; None for no validation.
        test_split: name of the test split (labels may be missing or -1); None for no test split.
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    def __init__(
        self,
        dataset: str | None = None,
        dataset_config: str | None = None,
        data_dir: str | None = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        problem_type: str | None = None,
        num_labels: int | None = None,
        label_names: list[str] | None = None,
        train_split: str = "train",
        validation_split: str | None = "validation",
        test_split: str | None = "test",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        # Without data, a predict file alone can be predicted.
        self.set_data_source(dataset, dataset_config, data_dir, self.predict_file is None, exclusive=True)
        schema_given = problem_type == REGRESSION or (problem_type and (label_names or num_labels))
        if dataset is None and data_dir is None and not schema_given:
            raise DataError(
                f"Predicting '{self.predict_file}' without dataset or data_dir needs problem_type and"
                " label_names (or num_labels); predict --ckpt_path takes them from the checkpoint."
            )
        if problem_type is not None and problem_type not in PROBLEM_TYPES:
            raise DataError(
                f"Unknown problem_type '{problem_type}'; expected one of {', '.join(PROBLEM_TYPES)}."
            )
        self.text_columns = (text_column,) if text_pair_column is None else (text_column, text_pair_column)
        self.label_column, self.train_split_name = label_column, train_split
        self.validation_split, self.test_split = validation_split, test_split
        self.label_schema = self._resolve_label_schema(problem_type, num_labels, label_names)
        given = label_names or num_labels
        self.label_names_source = "data.init_args.label_names" if given else "the training split's labels"
        # Record the resolved schema over the given (often None) values that `save_hyperparameters()` saved:
        # the CLI links it into the model's hparams, and Lightning refuses to log a key that holds different
        # values in the two.
        self.save_hyperparameters(
            {key: getattr(self, key) for key in ("problem_type", "num_labels", "label_names")}
        )

    # ----------------------------------------------------------------------------------------------------
    # The label schema, resolved in __init__ from the options and, for what they leave open, the data.

    @property
    def main_metric(self) -> str:
        """Metric used to pick the best checkpoint."""
        return {REGRESSION: "pearson", MULTI_LABEL: "f1_micro"}.get(self.problem_type, "accuracy")

    def _resolve_label_schema(
        self, problem_type: str | None, num_labels: int | None, label_names: list[str] | None
    ) -> LabelSchema:
        """Use the explicit settings; read the training labels only for what they leave open."""
        check_label_names(label_names)
        if problem_type == REGRESSION:
            if num_labels not in (None, 1):
                raise DataError(f"Regression has a single output, but num_labels is {num_labels}.")
            return LabelSchema(REGRESSION, tuple(label_names or (self.label_column,)))
        if problem_type is not None and (label_names or num_labels):
            names = tuple(label_names or (str(index) for index in range(num_labels)))
            return self._checked_schema(LabelSchema(problem_type, names), num_labels)
        train, origin = self.training_column(self.label_column, "read the labels from")
        feature = train.features[self.label_column]
        inferred = infer_label_schema(feature, train, self.label_column, origin)
        if not (label_names or num_labels) and label_kind(feature) in ("int", "list_int"):
            warn_of_absent_class_ids(train, self.label_column, origin)
        if problem_type is not None and problem_type != inferred.problem_type:
            label_encoding(problem_type, feature, self.label_column, origin)
            inferred = LabelSchema(problem_type, inferred.label_names)
        self.names_from_strings = not label_names and label_kind(feature) in ("str", "list_str")
        if label_names:
            inferred = LabelSchema(inferred.problem_type, tuple(label_names))
        elif num_labels and label_kind(feature) in ("int", "list_int") and num_labels >= inferred.num_labels:
            # Integer ids: the training split may simply lack the highest classes.
            inferred = LabelSchema(inferred.problem_type, tuple(str(index) for index in range(num_labels)))
        return self._checked_schema(inferred, num_labels)

    @staticmethod
    def _checked_schema(schema: LabelSchema, num_labels: int | None) -> LabelSchema:
        if schema.problem_type == SINGLE_LABEL and not schema.label_names:
            raise DataError("The training split has no labels (every label is empty): no class to learn.")
        if schema.problem_type == SINGLE_LABEL and len(schema.label_names) < 2:
            raise DataError(
                "Single-label classification needs at least 2 classes, but there is one,"
                f" {schema.label_names[0]!r}: list every class in data.init_args.label_names, or train on"
                " data with more than one."
            )
        if num_labels is not None and num_labels != schema.num_labels:
            raise DataError(
                f"num_labels is {num_labels} but there are {schema.num_labels} labels:"
                f" {list(schema.label_names)}."
            )
        return schema

    # ----------------------------------------------------------------------------------------------------
    # TokenizedDataModule hooks.

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        is_test = split_name == PREDICT_SPLIT or (
            split_name == self.test_split and split_name != self.validation_split
        )
        column = self.label_column
        labelled = split_name != PREDICT_SPLIT and (not is_test or column in dataset.column_names)
        require_columns(dataset, [*self.text_columns, column if labelled else None], origin)
        check_text_columns(dataset, self.text_columns, origin, optional=self.optional_text_columns)
        if labelled:
            encoding = self.split_encoding(dataset.features[column], origin)
            check_labels(
                dataset,
                column,
                encoding,
                self.label_names,
                split_name,
                allow_unlabeled=is_test,
                origin=origin,
                # A label of another split that training lacks: the model has no output for it.
                names_source=None if split_name == self.train_split_name else self.label_names_source,
            )
