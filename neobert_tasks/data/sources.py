"""Loading raw dataset splits from a local directory of split files or from a hub dataset.

A local directory holds one file (or several shards) per split, named after the split:
`train.parquet`, `validation.csv`, `test.jsonl`, `train-00000-of-00002.parquet`, ... Files are read with
`datasets.load_dataset(<builder>, data_files=...)` so that the resulting datasets are memory-mapped from the
datasets cache and carry fingerprints, which is what lets later `Dataset.map` calls be cached.

Every problem with the data is reported as a `DataError` whose message is one sentence naming the offending
directory, file, split or column.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from neobert_tasks.errors import UserInputError

# File suffix -> (datasets builder name, extra builder keyword arguments). Several suffixes share a builder.
FILE_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    ".parquet": ("parquet", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
}


class DataError(UserInputError, ValueError):
    """A dataset or tokenizer cannot be used as configured; the message says what and where."""


class MissingDataError(DataError, FileNotFoundError):
    """A directory, split file or tokenizer that the configuration points to does not exist."""


def find_split_files(directory: str | Path) -> dict[str, list[Path]]:
    """Map each split name found in `directory` to its files, e.g. {"train": [.../train.parquet]}.

    A file `<split>.<ext>` or a shard `<split>-<anything>.<ext>` belongs to `<split>`. Raises
    `MissingDataError` when the directory does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingDataError(f"Data directory '{directory}' does not exist or is not a directory.")
    split_files: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix not in FILE_FORMATS:
            continue
        # Shards follow the hub naming `<split>-00000-of-00003.<ext>`; split names themselves contain no '-'.
        split_name = path.stem.split("-", 1)[0]
        split_files.setdefault(split_name, []).append(path)
    return split_files


def _has_rows(path: Path) -> bool:
    """Whether a split file holds at least one row, checked cheaply before loading.

    The builders fail on row-less files with messages that do not name the file ("BatchSize must be
    greater than 0", "corresponds to no data"), so emptiness is detected here from the parquet footer or
    the first lines of a text file. A `.json` array is left to the check after loading.
    """
    if path.suffix == ".parquet":
        try:
            return pq.ParquetFile(path).metadata.num_rows > 0
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"File '{path}' is not a readable parquet file: {error}") from error
    if path.suffix == ".json":
        return True
    lines_needed = 2 if path.suffix in (".csv", ".tsv") else 1  # the header line is not a row
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            lines_needed -= bool(line.strip())
            if lines_needed == 0:
                return True
    return False


def _load_files(split: str, files: list[Path], cache_dir: str | None) -> datasets.Dataset:
    """Load the files of one split with the builder that matches their suffix."""
    suffixes = {path.suffix for path in files}
    if len(suffixes) > 1:
        raise DataError(f"Split '{split}' mixes file formats {sorted(suffixes)}: {[str(p) for p in files]}.")
    for path in files:
        if path.stat().st_size == 0:
            raise DataError(f"Split '{split}' file '{path}' is empty (0 bytes).")
        if not _has_rows(path):
            raise DataError(f"Split '{split}' file '{path}' has no rows.")
    builder, builder_kwargs = FILE_FORMATS[files[0].suffix]
    try:
        dataset = datasets.load_dataset(
            builder,
            data_files={split: [str(path) for path in files]},
            split=split,
            cache_dir=cache_dir,
            **builder_kwargs,
        )
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as error:
        reason = error.__cause__ or error  # DatasetGenerationError hides the reader's message in its cause
        raise DataError(f"Could not read split '{split}' from {[str(p) for p in files]}: {reason}") from error
    if len(dataset) == 0:
        raise DataError(f"Split '{split}' file '{files[0]}' has no rows.")
    return dataset


def load_local_splits(
    directory: str | Path, split_names: Iterable[str], cache_dir: str | None = None
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Load the splits among `split_names` that have files in `directory`; missing ones are left out.

    Returns the datasets and, per split, a description of its file(s) for error messages. Raises `DataError`
    when a split file is empty or unreadable, and `MissingDataError` when the directory does not exist or
    contains none of the requested splits.
    """
    split_files = find_split_files(directory)
    wanted = [name for name in split_names if name in split_files]
    if not wanted:
        raise MissingDataError(
            f"Data directory '{directory}' has no files for splits {list(split_names)}"
            f" (splits found: {', '.join(sorted(split_files)) or 'none'}; files are named"
            " <split>.parquet|csv|tsv|json|jsonl)."
        )
    loaded = datasets.DatasetDict()
    origins: dict[str, str] = {}
    for name in wanted:
        loaded[name] = _load_files(name, split_files[name], cache_dir)
        origins[name] = ", ".join(str(path) for path in split_files[name])
    return loaded, origins


def load_hub_splits(
    dataset_id: str, config_name: str | None = None, cache_dir: str | None = None
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Load every split of a hub dataset (or a locally cached copy of it) with `datasets.load_dataset`."""
    try:
        loaded = datasets.load_dataset(dataset_id, config_name, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 - the hub client raises many unrelated types; all mean "not loadable"
        config_text = f" with config '{config_name}'" if config_name else ""
        raise DataError(
            f"Could not load hub dataset '{dataset_id}'{config_text} (offline, unknown id or config?):"
            f" {error}"
        ) from error
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"Hub dataset '{dataset_id}' did not load as a dictionary of splits.")
    config_text = f", config '{config_name}'" if config_name else ""
    origins = {name: f"hub dataset '{dataset_id}'{config_text}, split '{name}'" for name in loaded}
    for name, dataset in loaded.items():
        if len(dataset) == 0:
            raise DataError(f"Split '{name}' of {origins[name]} has no rows.")
    return loaded, origins


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


def empty_text_rows(dataset: datasets.Dataset, columns: Iterable[str]) -> dict[str, np.ndarray]:
    """Per text column, the rows whose value is null, blank, or (for a column of word lists) empty.

    Columns that are absent or hold something other than text or lists are left to the split's checks,
    which name their type.
    """
    table = dataset.with_format("arrow")
    found = {}
    for column in columns:
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
