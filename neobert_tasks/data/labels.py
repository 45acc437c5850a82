"""Label kinds, how raw labels become model targets, label checks and the label schema a model is built with.

A label column's datasets feature has a *kind* (`label_kind`): class_label, int, float or str, or a list
of one of those. The kind gives the default problem type (lists multi-label, floats regression, the others
single-label) and, with the problem type, how each raw label is encoded into the model's target
(`ENCODINGS`, `encode_label`).
`infer_label_schema` reads the label names and problem type from a training split before any data is
tokenized, because the model head is built from them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lightning.pytorch.utilities import rank_zero_warn

from neobert_tasks.data.sources import DataError

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPES = (SINGLE_LABEL, MULTI_LABEL, REGRESSION)

# How raw labels become model targets (see `encode_label`), chosen from the problem type and the label type.
ENCODINGS = {
    (REGRESSION, "int"): "float",
    (REGRESSION, "float"): "float",
    (SINGLE_LABEL, "class_label"): "class_index",
    (SINGLE_LABEL, "int"): "class_index",
    (SINGLE_LABEL, "str"): "class_name",
    (MULTI_LABEL, "list_class_label"): "multi_hot_indices",
    (MULTI_LABEL, "list_int"): "multi_hot_indices",
    (MULTI_LABEL, "list_str"): "multi_hot_names",
    (MULTI_LABEL, "list_float"): "multi_hot_vector",
}


def label_kind(feature: object) -> str:
    """Classify a label feature as class_label/int/float/str, optionally prefixed by list_, or unsupported."""
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        if isinstance(feature.feature, datasets.Value) and feature.feature.dtype == "bool":
            return "list_float"  # a list of booleans is a multi-hot vector, not a list of class ids 0 and 1
        inner = label_kind(feature.feature)
        return f"list_{inner}" if not inner.startswith(("list_", "unsupported")) else "unsupported"
    if isinstance(feature, datasets.ClassLabel):
        return "class_label"
    if isinstance(feature, datasets.Value):
        dtype = feature.dtype
        if dtype.startswith(("int", "uint")) or dtype == "bool":
            return "int"  # bool labels are the two classes 0 (False) and 1 (True)
        if dtype.startswith(("float", "double")):
            return "float"
        if dtype in ("string", "large_string"):
            return "str"
    return "unsupported"


def encode_label(value: object, encoding: str, label_to_index: dict[str, int], num_labels: int) -> object:
    """Turn one raw label into the model target for `encoding` (values were checked beforehand)."""
    if value is None:
        # Unlabelled rows (test splits) get the placeholder GLUE uses, -1, in the target's shape.
        if encoding == "float":
            return float("nan")
        return [-1.0] * num_labels if encoding.startswith("multi_hot") else -1
    if encoding == "class_index":
        return int(value)
    if encoding == "class_name":
        if not isinstance(value, str):  # an integer naming a class (`names_for_integers`), or -1: unlabelled
            unlabelled = value == -1 and "-1" not in label_to_index  # a class may be named "-1" (sentiment)
            return -1 if unlabelled else label_to_index[str(value)]
        return label_to_index[value]
    if encoding == "float":
        return float(value)
    if encoding == "multi_hot_vector":
        return [float(item) for item in value]
    multi_hot = [0.0] * num_labels
    for item in value:
        multi_hot[label_to_index[str(item)] if encoding == "multi_hot_names" else int(item)] = 1.0
    return multi_hot


def encode_labels(
    batch: dict[str, list], *, label_column: str | None, encoding: str, label_to_index: dict, num_labels: int
) -> dict[str, list]:
    """`{"labels": [...]}`: the targets of a batch's `label_column`, or {} for a batch without labels."""
    if label_column is None or label_column not in batch:
        return {}
    return {
        "labels": [encode_label(value, encoding, label_to_index, num_labels) for value in batch[label_column]]
    }


def shortened(text: str, limit: int = 60) -> str:
    """``text`` cut to ``limit`` characters, for a message that quotes a value."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def names_text(label_names: Sequence[str], column: str, shown: int = 5) -> str:
    """The label names for a message: all of a few; of many (a text column read as labels), the first ones,
    their count and the likely cause."""
    if len(label_names) <= 2 * shown:
        return str(list(label_names))
    first = ", ".join(repr(shortened(name, 30)) for name in label_names[:shown])
    return f"[{first}, …] ({len(label_names)} names: does column '{column}' hold labels?)"


def check_labels(
    dataset: datasets.Dataset,
    column: str,
    encoding: str,
    label_names: Sequence[str],
    split: str,
    allow_unlabeled: bool,
    origin: str | None = None,
    names_source: str | None = None,
) -> None:
    """Raise `DataError` naming the split, its file (``origin``), the first bad row, the value and the valid
    range for the first invalid label.

    `allow_unlabeled` accepts -1 (or None), the placeholder of unlabelled test splits such as GLUE's;
    `names_source` says where the label names came from, for a label another split lacks.
    """
    where = f"split '{split}'" + (f" ({origin})" if origin else "")
    values = original = dataset.with_format("arrow")[column]
    if values.null_count:
        if not allow_unlabeled:
            row = pc.index(pc.is_null(values), True).as_py()
            raise DataError(
                f"Row {row} (counting from 0) of {where} has no label in column '{column}'"
                f" ({values.null_count} rows without one)."
            )
        values = pc.drop_null(values)
    # A null inside a label list (pandas writes a NaN in a float list as null) has no target to encode.
    flat = pc.list_flatten(values) if encoding.startswith("multi_hot") else values
    missing = flat.null_count if flat is not values else 0
    if missing:
        raise DataError(f"S{where[1:]} has {missing} null items in the label lists of column '{column}'.")
    if encoding in ("class_name", "multi_hot_names") and not pa.types.is_string(flat.type):
        # Integers read against names (`names_for_integers`): checked as the names they are written as,
        # but for an unlabelled row's -1 (a whole row's, not a list item's), unless a class is named "-1".
        unlabelled = allow_unlabeled and encoding == "class_name" and "-1" not in label_names
        flat = pc.cast(pc.filter(flat, pc.not_equal(flat, -1)) if unlabelled else flat, pa.string())
        original = pc.cast(original, pa.string()) if encoding == "class_name" else original  # file rows
    cause = f"; the label names come from {names_source}" if names_source else ""
    if encoding in ("class_index", "multi_hot_indices"):
        numbers = flat.to_numpy(zero_copy_only=False)
        valid = (numbers >= 0) & (numbers < len(label_names))
        if allow_unlabeled and encoding == "class_index":
            valid |= numbers == -1
        if not valid.all():
            # Rows are counted in the file: only where no unlabelled row was dropped before.
            exact = encoding == "class_index" and not original.null_count
            row = f"row {int(np.flatnonzero(~valid)[0])} of " if exact else ""
            raise DataError(
                f"Label {numbers[~valid][0]} in {row}{where} is outside the valid range"
                f" [0, {len(label_names)}){' (or -1 for unlabelled rows)' if allow_unlabeled else ''}{cause}."
            )
    elif encoding in ("class_name", "multi_hot_names"):
        unknown = sorted(set(pc.unique(pc.drop_null(flat)).to_pylist()) - set(label_names))
        if unknown:
            row = f"row {pc.index(original, unknown[0]).as_py()} of " if encoding == "class_name" else ""
            raise DataError(
                f"Label {shortened(unknown[0])!r} in {row}{where} is not one of the label names"
                f" {names_text(label_names, column)}{cause}."
            )
    elif encoding == "multi_hot_vector":
        sizes = set(pc.unique(pc.list_value_length(values)).to_pylist())
        if sizes != {len(label_names)}:
            raise DataError(
                f"Multi-hot labels in {where} have sizes {sorted(sizes)}, expected {len(label_names)}."
            )


@dataclass(frozen=True)
class LabelSchema:
    """What the model needs to know about the labels."""

    problem_type: str
    label_names: tuple[str, ...]

    @property
    def num_labels(self) -> int:
        return 1 if self.problem_type == REGRESSION else len(self.label_names)


def infer_label_schema(feature: object, values: datasets.Dataset, column: str, origin: str) -> LabelSchema:
    """Infer problem type and label names from a label feature and the labels of the training split."""
    kind = label_kind(feature)
    if kind == "unsupported":
        raise DataError(f"Label column '{column}' of {origin} has unsupported type {feature}.")
    if kind == "float":
        return LabelSchema(REGRESSION, (column,))
    problem_type = MULTI_LABEL if kind.startswith("list_") else SINGLE_LABEL
    inner = feature.feature if kind.startswith("list_") else feature
    if isinstance(inner, datasets.ClassLabel):
        return LabelSchema(problem_type, tuple(inner.names))
    if kind == "int" and inner.dtype == "bool":
        return LabelSchema(problem_type, ("False", "True"))  # class ids 0 and 1, named as the data wrote them
    column_values = values.with_format("arrow")[column]
    flat = pc.list_flatten(column_values) if kind.startswith("list_") else column_values
    if kind == "list_float":
        size = pc.max(pc.list_value_length(column_values)).as_py() or 0
        return LabelSchema(problem_type, tuple(str(index) for index in range(size)))
    if kind.endswith("str"):
        return LabelSchema(problem_type, tuple(sorted(pc.unique(pc.drop_null(flat)).to_pylist())))
    numbers = np.asarray(pc.drop_null(flat).to_numpy(zero_copy_only=False))
    if numbers.size and numbers.min() < 0:
        raise DataError(
            f"Label {numbers.min()} in column '{column}' of {origin} is negative; class ids start at 0."
        )
    return LabelSchema(problem_type, tuple(str(index) for index in range(int(numbers.max(initial=-1)) + 1)))


def warn_of_absent_class_ids(values: datasets.Dataset, column: str, origin: str) -> None:
    """Warn when integer class ids between 0 and the largest never occur: they index the model's outputs, so
    labels 1-3 make 4 classes, one that no example has (labels numbered from 1, or a class lost)."""
    flat = values.with_format("arrow")[column]
    if pa.types.is_list(flat.type) or pa.types.is_large_list(flat.type):
        flat = pc.list_flatten(flat)
    present = np.unique(np.asarray(pc.drop_null(flat).to_numpy(zero_copy_only=False)))
    largest = int(present.max()) if present.size else -1
    if absent := sorted(set(range(largest + 1)) - set(present.tolist())):
        rank_zero_warn(
            f"Class ids {shortened(str(absent))} never occur in column '{column}' of {origin} (ids"
            f" {int(present.min())}-{largest}): the model gets {largest + 1} classes and may predict them;"
            " number the classes from 0 without gaps, write them as names, or set data.init_args.label_names."
        )


def label_encoding(problem_type: str, feature: object, column: str, origin: str) -> str:
    """The `encode_label` mode for labels of type `feature` under `problem_type`; DataError if they clash."""
    kind = label_kind(feature)
    encoding = ENCODINGS.get((problem_type, kind))
    if encoding is None:
        # Class ids read from a CSV file turn float when one label is missing (pandas reads it as NaN).
        from_csv = ".csv" in origin or ".tsv" in origin
        csv = " (one empty label makes a CSV column of class ids float)" if from_csv else ""
        hint = f": floats are regression targets, class ids are integers{csv}" if kind == "float" else ""
        raise DataError(
            f"Label column '{column}' of {origin} has type {feature}, which does not fit"
            f" {problem_type}{hint}."
        )
    return encoding


def check_label_names(label_names: Sequence[str] | None) -> None:
    """Refuse ``label_names`` that name one class twice."""
    names = list(label_names or ())
    if repeated := next((name for name in names if names.count(name) > 1), None):
        raise DataError(
            f"data.init_args.label_names lists {repeated!r} twice: each class needs a name of its own."
        )


def numbers_other_than_ids(label_names: Sequence[str]) -> bool:
    """Whether the class names are integers written out, other than the ids 0…n-1 (classes "1", "2", "3")."""
    numbers = all(re.fullmatch(r"-?(0|[1-9][0-9]*)", name) for name in label_names)  # as str(int) writes
    return numbers and list(label_names) != [str(index) for index in range(len(label_names))]


def names_for_integers(encoding: str) -> str:
    """The encoding of integer labels where the class names are other numbers (`numbers_other_than_ids`):
    an integer 2 is then the class named "2" (a file written with numbers where another has text), not the
    third name, which is what it would index."""
    return {"class_index": "class_name", "multi_hot_indices": "multi_hot_names"}.get(encoding, encoding)
