"""Tag names of word-tagging data and checks that its words and tags columns are well formed.

Rows hold a list of words and one tag per word, the tags either ids (`ClassLabel` or plain integers) or
names (strings). The checks read the columns as Arrow arrays, so they cost little even on large splits, and
raise a `DataError` that names the first bad row.
"""

from __future__ import annotations

from collections.abc import Sequence

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from neobert_tasks.data.labels import label_kind
from neobert_tasks.data.sources import DataError


def sorted_tag_names(tags: Sequence[str]) -> list[str]:
    """Tag names in sorted order with the outside tag "O" first, as id 0 (the common convention)."""
    names = sorted(set(tags))
    return ["O", *(name for name in names if name != "O")] if "O" in names else names


def tag_names_from_split(dataset: datasets.Dataset, column: str, origin: str) -> list[str]:
    """Tag names of a training split: the `ClassLabel` names, else the sorted string tags seen."""
    feature = dataset.features[column]
    kind = label_kind(feature)
    if kind == "list_class_label":
        return list(feature.feature.names)
    if kind == "list_str":
        values = pc.unique(pc.drop_null(pc.list_flatten(dataset.with_format("arrow")[column])))
        return sorted_tag_names(values.to_pylist())
    if kind == "list_int":
        raise DataError(
            f"Tag column '{column}' of {origin} holds integer ids without names; set label_names to the"
            " tag names in id order."
        )
    raise DataError(f"Tag column '{column}' of {origin} must hold lists of tags, not {feature}.")


def tag_index_map(feature: datasets.Features, label_names: Sequence[str]) -> dict | None:
    """How a tag column's values become indices into `label_names`: string tags by name, `ClassLabel` ids
    by their names when those are not `label_names` in the same order; None when the ids already are."""
    kind = label_kind(feature)
    if kind == "list_str":
        return {name: index for index, name in enumerate(label_names)}
    if kind == "list_class_label" and list(feature.feature.names) != list(label_names):
        index_of = {name: index for index, name in enumerate(label_names)}
        # Tags a ClassLabel declares but label_names lacks map nowhere; `check_tags` refuses them first.
        return {i: index_of[name] for i, name in enumerate(feature.feature.names) if name in index_of}
    return None


def first_row(mask: pa.ChunkedArray | pa.Array) -> int:
    """Index of the first true value of a boolean array, -1 when there is none."""
    return pc.index(pc.fill_null(mask, False), True).as_py()


def check_words(dataset: datasets.Dataset, column: str, origin: str) -> None:
    """The words column must hold lists of strings without missing rows or words."""
    if label_kind(dataset.features[column]) != "list_str":
        raise DataError(
            f"Column '{column}' of {origin} must hold lists of words (strings),"
            f" not {dataset.features[column]}."
        )
    words = dataset.with_format("arrow")[column]
    if (missing_row := first_row(pc.is_null(words))) >= 0:
        raise DataError(f"Row {missing_row} of {origin} has no words (null) in column '{column}'.")
    flat = pc.list_flatten(words)
    if flat.null_count:
        raise DataError(f"Column '{column}' of {origin} has null words inside its word lists.")
    # The tokenizer makes no token of an empty or all-space word, so its tag could never be predicted.
    blank = pc.or_(pc.equal(pc.utf8_length(flat), 0), pc.utf8_is_space(flat))
    if (first := first_row(blank)) >= 0:
        lists = words.combine_chunks()
        row = pc.list_parent_indices(lists)[first].as_py()
        position = first - lists.offsets[row].as_py()
        raise DataError(
            f"Word {position} of row {row} of {origin} (column '{column}') is {flat[first].as_py()!r}: a word"
            " needs text other than spaces, or the model can never tag it."
        )


def check_tags(
    dataset: datasets.Dataset, tokens_column: str, tags_column: str, label_names: Sequence[str], origin: str
) -> None:
    """Each row needs one tag per word, each a valid id or known name; `DataError` names the first bad one."""
    kind = label_kind(dataset.features[tags_column])
    if kind not in ("list_class_label", "list_int", "list_str"):
        raise DataError(
            f"Column '{tags_column}' of {origin} must hold lists of tag ids or names,"
            f" not {dataset.features[tags_column]}."
        )
    table = dataset.with_format("arrow")
    tags = table[tags_column].combine_chunks()
    tag_counts = pc.list_value_length(tags)
    word_counts = pc.list_value_length(table[tokens_column].combine_chunks())
    # Kleene "or": a row without tags (null) is bad even though its length comparison is null.
    if (bad_row := first_row(pc.or_kleene(pc.is_null(tags), pc.not_equal(word_counts, tag_counts)))) >= 0:
        raise DataError(
            f"Row {bad_row} of {origin} has {tag_counts[bad_row].as_py() or 0} tags in column"
            f" '{tags_column}' for {word_counts[bad_row].as_py()} words in column '{tokens_column}'."
        )
    values = pc.list_flatten(tags)
    if kind == "list_class_label":
        check_class_label_names(dataset.features[tags_column].feature.names, tags_column, label_names, origin)
    if kind == "list_str":
        invalid = pc.invert(pc.is_in(values, value_set=pa.array(list(label_names), type=values.type)))
    else:
        invalid = pc.or_(pc.less(values, 0), pc.greater_equal(values, len(label_names)))
    if (bad_value := first_row(invalid)) >= 0:
        row = pc.list_parent_indices(tags)[bad_value].as_py()
        # A CoNLL file has sentences and no named columns: its rows are its sentences, in order.
        conll = origin.endswith((".conll", ".txt"))
        where = f"sentence {row} (counting from 0) of {origin}" if conll else f"row {row} of {origin}"
        raise DataError(
            f"Tag {values[bad_value].as_py()!r} in {where}{'' if conll else f' (column {tags_column!r})'} is"
            f" not one of the {len(label_names)} label names {list(label_names)}"
            f"{' (ids 0 to ' + str(len(label_names) - 1) + ')' if kind != 'list_str' else ''}."
        )


def check_class_label_names(
    names: Sequence[str], tags_column: str, label_names: Sequence[str], origin: str
) -> None:
    """Tag ids with `ClassLabel` names are read by name: each name needs a place in `label_names` (ids
    taken by position under other names would train, score and export every such tag as another)."""
    if unknown := [name for name in names if name not in label_names]:
        raise DataError(
            f"Column '{tags_column}' of {origin} names its tag ids {list(names)}, and '{unknown[0]}' is not"
            f" one of label_names {list(label_names)}: add it, or leave label_names unset to use the data's"
            " names."
        )
