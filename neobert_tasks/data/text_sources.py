"""Where the documents of masked language modelling come from, besides `sources.py`'s split files.

A local directory may hold `<split>.txt` files, one document per non-empty line, next to (or instead of)
tabular split files; a hub dataset may be streamed rather than downloaded, for corpora too large to copy.
A corpus without a validation split gets one held out of its training documents.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets

from neobert_tasks.data.sources import (
    DataError,
    MissingDataError,
    check_has_rows,
    find_split_files,
    load_local_splits,
    read_files,
)

# Documents held out for validation from a streamed training split that has no validation split.
STREAMING_VALIDATION_DOCUMENTS = 1000


def load_text_directory(
    directory: str | Path, split_names: Sequence[str], cache_dir: str | None, text_column: str = "text"
) -> tuple[dict, dict[str, str]]:
    """Load ``<split>.txt`` files (one document per non-empty line) and any other supported split files."""
    split_files = find_split_files(directory)  # MissingDataError when the directory does not exist
    directory = Path(directory)
    text_files = {path.stem: path for path in sorted(directory.glob("*.txt")) if path.stem in split_names}
    loaded, origins = {}, {}
    for name, path in text_files.items():
        check_has_rows(name, path)  # the text builder fails on an empty file without naming it
        dataset = read_files("text", name, [path], cache_dir).filter(
            lambda row: bool(row["text"].strip()), desc=f"Dropping empty lines of {name}"
        )
        loaded[name] = dataset.rename_column("text", text_column) if text_column != "text" else dataset
        origins[name] = str(path)
    others = [name for name in split_names if name not in loaded and name in split_files]
    if others:
        more, more_origins = load_local_splits(directory, others, cache_dir)
        loaded.update(more)
        origins.update(more_origins)
    if not loaded:
        raise MissingDataError(
            f"Data directory '{directory}' has no files for splits {list(split_names)}"
            " (files are named <split>.txt|parquet|csv|tsv|json|jsonl)."
        )
    return loaded, origins


def stream_hub_splits(
    dataset_id: str, dataset_config: str | None, cache_dir: str | None
) -> tuple[dict, dict[str, str]]:
    """Every split of a hub dataset as a stream (`datasets.IterableDataset`), with its origin."""
    try:
        loaded = datasets.load_dataset(dataset_id, dataset_config, streaming=True, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 - the hub client raises many types; all mean "not loadable"
        raise DataError(f"Could not stream hub dataset '{dataset_id}': {error}") from error
    return dict(loaded), {name: f"streamed hub dataset '{dataset_id}', split '{name}'" for name in loaded}


def hold_out_validation(
    raw: dict, origins: dict[str, str], train_split: str, fraction: float, seed: int, streamed: bool
) -> None:
    """Carve a "validation" split out of the training split, in place: a stream's first documents, else
    `fraction` of the documents (fixed seed: cached and reproducible); nothing when `fraction` is 0 or
    there is a single document."""
    train = raw[train_split]
    if streamed:
        raw["validation"] = train.take(STREAMING_VALIDATION_DOCUMENTS)
        raw[train_split] = train.skip(STREAMING_VALIDATION_DOCUMENTS)
    elif fraction > 0 and len(train) > 1:
        parts = train.train_test_split(test_size=fraction, seed=seed, shuffle=True)
        raw[train_split], raw["validation"] = parts["train"], parts["test"]
    else:
        return
    origins["validation"] = f"held out from {origins[train_split]}"
