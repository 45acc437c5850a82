"""Checks that a raw split is usable before it is tokenized: the splits, columns, texts and labels it needs.

Each failure is a `DataError` (or `MissingDataError`) whose one sentence names the split, file or column and
the first offending row.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lightning.pytorch.utilities import rank_zero_warn

from neobert_tasks.data.keys import EXAMPLE_INDEX, SOURCE_INDEX_COLUMN
from neobert_tasks.data.labels import label_kind, shortened
from neobert_tasks.data.sources import DataError, MissingDataError


def check_text_columns(
    dataset: datasets.Dataset, columns: Sequence[str], origin: str, optional: Sequence[str] = ()
) -> None:
    """Text columns must hold strings without missing values (the tokenizer cannot encode None), except
    the ``optional`` ones (a long document's title), whose missing values the encoder leaves out."""
    for column in columns:
        if label_kind(dataset.features[column]) != "str":
            raise DataError(f"Column '{column}' of {origin} must hold text, not {dataset.features[column]}.")
        if column in optional:
            continue
        if missing := dataset.with_format("arrow")[column].null_count:
            raise DataError(f"Column '{column}' of {origin} has {missing} empty (null) values.")


def require_splits(
    available: Sequence[str], required: Sequence[str], source: str, any_of: bool = False
) -> None:
    """Raise `MissingDataError` unless all (or, with `any_of`, at least one) of `required` are available."""
    missing = [name for name in required if name not in available]
    if (any_of and len(missing) < len(required)) or (not any_of and not missing):
        return
    wanted = " or ".join(f"'{name}'" for name in required) if any_of else ", ".join(f"'{m}'" for m in missing)
    raise MissingDataError(
        f"No data for split {wanted} in {source} (splits found: {', '.join(available) or 'none'})."
    )


def require_columns(dataset: datasets.Dataset, columns: Iterable[str | None], origin: str) -> None:
    """Raise `DataError` naming the first of `columns` (None entries are skipped) missing from `dataset`."""
    for column in columns:
        if column is not None and column not in dataset.column_names:
            raise DataError(
                f"Column '{column}' is missing from {origin}"
                f" (columns present: {', '.join(dataset.column_names)})."
            )


def empty_text_rows(
    dataset: datasets.Dataset, columns: Iterable[str | tuple[str, ...]]
) -> dict[str, np.ndarray]:
    """Per text column, the rows whose value is null, blank, or (for a column of word lists) empty; a tuple
    of columns is a group, empty where all of its present columns are (a long document's title and text).

    Columns that are absent or hold something other than text or lists are left to the split's checks,
    which name their type.
    """
    table = dataset.with_format("arrow")
    found = {}
    for column in columns:
        if isinstance(column, tuple):
            present = [name for name in column if name in dataset.column_names]
            parts = empty_text_rows(dataset, present)
            if present and len(parts) == len(present):
                rows = functools.reduce(np.intersect1d, parts.values())
                if rows.size:
                    found[" and ".join(present)] = rows
            continue
        if column not in dataset.column_names:
            continue
        values = table[column]
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            empty = pc.equal(pc.utf8_trim_whitespace(values), "")
        elif pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            empty = pc.equal(pc.list_value_length(values), 0)
        else:
            continue
        # Kleene "or": a null value is empty even though its comparison above is null.
        rows = np.flatnonzero(pc.or_kleene(pc.is_null(values), empty).to_numpy(zero_copy_only=False))
        if rows.size:
            found[column] = rows
    return found


def require_finite(dataset: datasets.Dataset, column: str, split: str, origin: str) -> None:
    """Raise `DataError` naming the first row whose float value (or float list item) in `column` is NaN or
    infinite; nulls and columns that are absent or not floats are left to the split's checks.

    A non-finite regression target or multi-hot entry passes everything downstream silently: the loss turns
    nan (blamed on the learning rate) and so do the validation correlations, which then select no model.
    """
    if column not in dataset.column_names:
        return
    values = dataset.with_format("arrow")[column]
    parents = None
    kind = values.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        parents = pc.list_parent_indices(values).to_numpy()  # the row of each flattened item
        values = pc.list_flatten(values)
    if not pa.types.is_floating(values.type):
        return
    non_finite = pc.fill_null(pc.invert(pc.is_finite(values)), False)
    positions = np.flatnonzero(non_finite.to_numpy(zero_copy_only=False))
    if not positions.size:
        return
    rows = np.unique(parents[positions]) if parents is not None else positions
    value = values[int(positions[0])].as_py()
    more = f" (and {rows.size - 1} more such row{'s' if rows.size > 2 else ''})" if rows.size > 1 else ""
    raise DataError(
        f"Row {rows[0]} (counting from 0) of split '{split}' ({origin}) holds {value} in column '{column}',"
        f" which must hold finite numbers{more}; fix or remove the row."
    )


def skip_empty_texts(
    dataset: datasets.Dataset,
    columns: Sequence[str],
    policy: str,
    split: str,
    origin: str,
    keep_row_numbers: bool = False,
    warned: set[str] | None = None,
) -> datasets.Dataset:
    """Drop the rows with an empty or null text in `columns` (`policy` skip, with a warning giving their
    count) or raise `DataError` naming the first one (`error`); a split without any comes back unchanged.

    With `keep_row_numbers`, the rows kept get an `example_index` column (unless the data has its own
    index column) holding their row number in the file, so predictions written by index match its rows.
    A warning already in `warned` (the datamodule's: prepare_data and setup both read a split) is not
    given again.
    """
    empty = empty_text_rows(dataset, columns) if columns else {}
    if not empty:
        return dataset
    if policy == "error":
        column, rows = min(empty.items(), key=lambda item: item[1][0])
        raise DataError(
            f"Row {rows[0]} (counting from 0) of split '{split}' ({origin}) has an empty or null text in"
            f" column '{column}';"
            " fix the data, or set data.init_args.empty_texts to skip to drop such rows."
        )
    bad = np.unique(np.concatenate(list(empty.values())))
    if len(bad) == len(dataset):
        raise DataError(f"Every row of split '{split}' ({origin}) has an empty or null text.")
    warning = (
        f"Skipped {len(bad)} of {len(dataset)} rows of split '{split}' with an empty or null text in"
        f" column(s) {', '.join(sorted(empty))} ({origin}); set data.init_args.empty_texts to error to"
        " refuse them."
    )
    if warned is None or warning not in warned:
        rank_zero_warn(warning)
    if warned is not None:
        warned.add(warning)
    if keep_row_numbers and SOURCE_INDEX_COLUMN not in dataset.column_names:
        dataset = dataset.add_column(EXAMPLE_INDEX, np.arange(len(dataset)))
    # `select` with the kept row numbers gets a deterministic fingerprint, so tokenization stays cached.
    return dataset.select(np.setdiff1d(np.arange(len(dataset)), bad))


def without_unusable_index(dataset: datasets.Dataset, origin: str, warned: set[str]) -> datasets.Dataset:
    """`dataset` without its `SOURCE_INDEX_COLUMN` where that cannot index predictions: not integers (ids
    like "id-0"), nulls, or a value twice (rows sharing an index would share a text in prediction files).
    Predictions are then indexed by row number, with a warning."""
    if SOURCE_INDEX_COLUMN not in dataset.column_names or len(dataset) == 0:
        return dataset
    values = dataset.with_format("arrow")[SOURCE_INDEX_COLUMN]
    distinct = pc.count_distinct(values).as_py() == len(values)
    if pa.types.is_integer(values.type) and not values.null_count and distinct:
        return dataset
    warning = (
        f"Column '{SOURCE_INDEX_COLUMN}' of {origin} does not hold a distinct integer per row"
        f" ({shortened(str(values[0].as_py()))!r}, …): predictions are indexed by row number instead."
    )
    if warning not in warned:
        warned.add(warning)
        rank_zero_warn(warning)
    return dataset.remove_columns(SOURCE_INDEX_COLUMN)
