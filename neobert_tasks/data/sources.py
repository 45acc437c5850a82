"""Loading raw dataset splits from a local directory of split files or from a hub dataset.

A local directory holds one file (or several shards) per split, named after the split: `train.parquet`,
`validation.csv`, `train-00000-of-00002.parquet`, ... `datasets.load_dataset(<builder>, data_files=...)`
reads them into the datasets cache, memory-mapped and fingerprinted, so later `Dataset.map` calls are
cached; formats with a reader of their own (CoNLL, SQuAD JSON) land there through `load_generated_split`.

Every problem with the data is reported as a `DataError` whose message is one sentence naming the offending
directory, file, split or column. CSV/TSV rows whose field count differs from the header's are refused with
their line (pandas would shift or drop fields silently), and so are non-finite numbers in a label column.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Collection, Iterable
from itertools import islice
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from neobert_tasks.console import datasets_progress_bars_off, datasets_reader_errors_quiet
from neobert_tasks.data.hub_access import LOCAL_DATA_HINT, hub_unreachable, offline_hub
from neobert_tasks.errors import (
    WRITE_ERRNOS,
    StorageError,
    UserInputError,
    describe_storage_fault,
    storage_fault,
)

# File suffix -> (datasets builder name, extra builder keyword arguments). Several suffixes share a builder.
# index_col=False: pandas must never take the first field for an index when rows have one field more than
# the header (the columns would shift silently); `check_csv_rows` refuses such rows beforehand.
FILE_FORMATS: dict[str, tuple[str, dict[str, object]]] = {
    ".parquet": ("parquet", {}),
    ".csv": ("csv", {"index_col": False}),
    ".tsv": ("csv", {"delimiter": "\t", "index_col": False}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
}
# What a delimiter is called in the error about a row with more fields than the header.
DELIMITER_NAMES = {",": "comma", "\t": "tab"}


class DataError(UserInputError, ValueError):
    """A dataset or tokenizer cannot be used as configured; the message says what and where."""


class MissingDataError(DataError, FileNotFoundError):
    """A directory, split file or tokenizer that the configuration points to does not exist."""


def find_split_files(
    directory: str | Path, suffixes: Collection[str] = FILE_FORMATS
) -> dict[str, list[Path]]:
    """Map each split name found in `directory` to its files, e.g. {"train": [.../train.parquet]}.

    A file `<split>.<ext>` or a shard `<split>-<anything>.<ext>`, for each `.<ext>` of `suffixes`, belongs
    to `<split>`. Raises `MissingDataError` when the directory does not exist.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise MissingDataError(
            f"Data directory '{directory}' (data.init_args.data_dir) does not exist or is not a directory."
        )
    split_files: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.suffix not in suffixes:
            continue
        # Shards follow the hub naming `<split>-00000-of-00003.<ext>`; split names themselves contain no '-'.
        split_files.setdefault(path.stem.split("-", 1)[0], []).append(path)
    return split_files


def check_has_rows(split: str, path: Path) -> None:
    """Refuse a split file without rows (0 bytes, blank lines only, a header only), naming it: the builders'
    own errors ("BatchSize must be greater than 0", "corresponds to no data") do not. Rows are counted
    cheaply, from the parquet footer or the first lines; a `.json` array is left to the check after loading.
    """
    if path.stat().st_size == 0:
        raise DataError(f"Split '{split}' file '{path}' is empty (0 bytes).")
    if path.suffix == ".parquet":
        try:
            has_rows = pq.ParquetFile(path).metadata.num_rows > 0
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"File '{path}' is not a readable parquet file: {error}") from error
    else:
        lines_needed = 2 if path.suffix in (".csv", ".tsv") else 1  # the header line is not a row
        with path.open(encoding="utf-8-sig", errors="replace") as handle:  # a lone byte-order mark is no row
            has_rows = (
                path.suffix == ".json"
                or len(list(islice(filter(str.strip, handle), lines_needed))) == lines_needed
            )
    if not has_rows:
        raise DataError(f"Split '{split}' file '{path}' has no rows.")


def file_stamps(files: list[Path]) -> list[list[int]]:
    """What tells a file's content apart in a datasets cache key, per file: size, modification time, inode
    change time and inode.

    datasets keys a local file by its modification time alone, so a file replaced by one with the same
    time (`cp -p`, `rsync -a`, `tar x`) was served from the cache with its old rows and labels. The change
    time moves with every write and rename and cannot be set back (`touch -d` moves it too); the inode
    tells a replaced file. A stamp that moves without a change of content (`chmod`) only costs a re-read.
    """
    stamps = [path.stat() for path in files]
    return [[stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino] for stat in stamps]


def read_files(
    builder: str, split: str, files: list[Path], cache_dir: str | None, **builder_kwargs: object
) -> datasets.Dataset:
    """`datasets.load_dataset` of local `files` as split `split` with `builder`, into the datasets cache
    under a config name made from their `file_stamps`, so that an edited file is read again.
    Text that is not UTF-8 is refused as a `DataError` naming the file and line; other errors pass through."""
    stamps = hashlib.sha256(json.dumps(file_stamps(files)).encode()).hexdigest()[:16]
    if builder == "text":  # a byte-order mark (a Windows editor's) would start the first line's text
        builder_kwargs.setdefault("encoding", "utf-8-sig")
    try:
        # Reading a local file is quick: no "Generating <split> split" bar.
        with datasets_progress_bars_off(), datasets_reader_errors_quiet():
            dataset = datasets.load_dataset(
                builder,
                name=f"files-{stamps}",  # the name is part of the cache folder's
                data_files={split: [str(path) for path in files]},
                split=split,
                cache_dir=cache_dir,
                **builder_kwargs,
            )
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
        if isinstance(error, UnicodeDecodeError) or isinstance(error.__cause__, UnicodeDecodeError):
            raise DataError(_not_utf8_message(files)) from error
        raise
    if builder == "json":
        # The JSON reader copies bytes that are not UTF-8 into string columns unchecked; a later string
        # kernel would fail on them with a bare Arrow traceback. The full check is one pass in C++.
        try:
            dataset.data.table.validate(full=True)
        except pa.ArrowInvalid as error:
            if "UTF8" not in str(error):
                names = [str(path) for path in files]
                raise DataError(f"Data files {names} do not read as a table: {error}") from error
            raise DataError(_not_utf8_message(files)) from error
    return dataset


def _load_files(split: str, files: list[Path], cache_dir: str | None) -> datasets.Dataset:
    """Load the files of one split (of one format, checked) with the builder that matches their suffix."""
    for path in files:
        check_has_rows(split, path)
    builder, builder_kwargs = FILE_FORMATS[files[0].suffix]
    if builder == "csv":
        # Checked on every load, not only when the datasets cache misses, so a bad file is never hidden.
        for path in files:
            check_csv_rows(path, str(builder_kwargs.get("delimiter", ",")))
    try:
        dataset = read_files(builder, split, files, cache_dir, **builder_kwargs)
    except DataError:
        raise
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as error:
        check_cache_writable(error, cache_dir)
        reason = error.__cause__ or error  # DatasetGenerationError hides the reader's message in its cause
        raise DataError(
            f"Could not read split '{split}' from {[str(p) for p in files]}: {str(reason).strip()}"
        ) from error
    if len(dataset) == 0:
        raise DataError(f"Split '{split}' file '{files[0]}' has no rows.")
    return dataset


def check_cache_writable(error: BaseException, cache_dir: str | None) -> None:
    """Raise `StorageError` when ``error``, raised while datasets read a split into its cache, is the
    cache's disk refusing a write (full, over quota, read-only), not the data failing to read."""
    fault = storage_fault(error)
    if fault is not None and fault.errno in WRITE_ERRNOS:
        cache = cache_dir or datasets.config.HF_DATASETS_CACHE
        raise StorageError(
            f"Could not write the datasets cache in '{cache}' ({describe_storage_fault(fault)}): make room,"
            " or set data.init_args.cache_dir to a folder on another disk."
        ) from error


def _not_utf8_message(files: list[Path]) -> str:
    """The first line that is not UTF-8 among `files`: the readers' error gives a byte offset inside a
    chunk, which names neither the file's line nor the row."""
    for path in files:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as error:
                    return (
                        f"Data file '{path}' line {number} is not UTF-8 (byte {error.start + 1} of the line"
                        f" is 0x{line[error.start]:02x}); save the file as UTF-8, for example with"
                        f" `iconv -f latin1 -t utf-8`."
                    )
    return f"Data files {[str(path) for path in files]} are not UTF-8; save them as UTF-8."


def check_csv_rows(path: Path, delimiter: str) -> None:
    """Raise `DataError` naming the first line of a CSV/TSV file whose field count differs from the header's.

    pandas, which reads these files, takes the first field for an index when the first row has one field too
    many, and fills short rows up with nulls: an unquoted comma (or tab) in a text, or a line break inside an
    unquoted text, shifts or drops data without an error. pyarrow's parser tells cheaply whether any row is
    off; only then does the `csv` module count again, because it knows the physical line each row starts on
    (pyarrow counts rows, not lines, and treats a line of spaces as a row where pandas skips it).
    """
    try:
        pa_csv.read_csv(
            path,
            parse_options=pa_csv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=lambda row: "error"
            ),
            # The header is row 0 and fixes the field count; only the first column is converted, as bytes.
            read_options=pa_csv.ReadOptions(autogenerate_column_names=True),
            convert_options=pa_csv.ConvertOptions(include_columns=["f0"], column_types={"f0": pa.binary()}),
        )
        return
    except (pa.ArrowException, OSError):
        pass  # a row is off, or pyarrow cannot read the file: the exact count below decides
    mismatch = _first_mismatched_line(path, delimiter)
    if mismatch is None:
        return
    line, fields, header_fields, others = mismatch
    if fields > header_fields:
        hint = f"an unquoted {DELIMITER_NAMES.get(delimiter, repr(delimiter))} in the text?"
    else:
        hint = "a missing field, a line break in an unquoted text, or an unbalanced quote?"
    more = f", and {others} more such row{'s' if others > 1 else ''}" if others else ""
    raise DataError(
        f"Data file '{path}' line {line} has {fields} field{'s' if fields != 1 else ''} where the header has"
        f" {header_fields} ({hint}); quote the field or fix the row{more}."
    )


def _first_mismatched_line(path: Path, delimiter: str) -> tuple[int, int, int, int] | None:
    """(line, fields, header fields, count of further such rows) of the first row that does not match the
    header, lines counted from 1 (a quoted text may span several); None when every row matches."""
    previous_limit = csv.field_size_limit(2**31 - 1)  # pandas reads fields of any size
    try:
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            rows = csv.reader(handle, delimiter=delimiter)
            header_fields, first, count, end = None, None, 0, 0
            for row in rows:
                start, end = end + 1, rows.line_num
                if len(row) <= 1 and not "".join(row).strip():
                    continue  # pandas skips blank lines and lines of spaces
                if header_fields is None:
                    header_fields = len(row)
                elif len(row) != header_fields:
                    count += 1
                    first = first or (start, len(row))
    except csv.Error:
        return None  # left to pandas, whose error names the file
    finally:
        csv.field_size_limit(previous_limit)
    return None if first is None or header_fields is None else (*first, header_fields, count - 1)


def load_local_splits(
    directory: str | Path,
    split_names: Iterable[str],
    cache_dir: str | None = None,
    split_files: dict[str, list[Path]] | None = None,
    file_names: str = "<split>.parquet|csv|tsv|json|jsonl",
    read_own_format: Callable[[str, list[Path]], datasets.Dataset | None] | None = None,
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Load the splits among `split_names` that have files in `directory`; missing ones are left out.

    A task whose files have a format of its own (CoNLL columns, official SQuAD JSON) passes the files it
    finds (`split_files`, named as `file_names` says) and `read_own_format(split, files)`, which reads a
    split of that format and returns None for the tabular files read here.

    Returns the datasets and, per split, a description of its file(s) for error messages. Raises `DataError`
    when a split file is empty or unreadable, and `MissingDataError` when the directory does not exist or
    contains none of the requested splits.
    """
    split_files = find_split_files(directory) if split_files is None else split_files
    wanted = [name for name in split_names if name in split_files]
    if not wanted:
        raise MissingDataError(
            f"Data directory '{directory}' has no files for splits {list(split_names)}"
            f" (splits found: {', '.join(sorted(split_files)) or 'none'}; files are named {file_names})."
        )
    loaded, origins = datasets.DatasetDict(), {}
    for name in wanted:
        files = split_files[name]
        if len(suffixes := {path.suffix for path in files}) > 1:
            raise DataError(
                f"Split '{name}' mixes file formats {sorted(suffixes)}: {[str(p) for p in files]}."
            )
        dataset = read_own_format(name, files) if read_own_format else None
        loaded[name] = _load_files(name, files, cache_dir) if dataset is None else dataset
        origins[name] = ", ".join(str(path) for path in files)
    return loaded, origins


def load_generated_split(
    split: str,
    files: list[Path],
    generator: Callable,
    features: datasets.Features,
    cache_dir: str | None,
    rows_name: str,
    **generator_kwargs: object,
) -> datasets.Dataset:
    """Run `generator(paths=..., file_stamps=..., **generator_kwargs)` over the files of a split with a
    format of its own (CoNLL columns, official SQuAD JSON) into a memory-mapped dataset in the datasets
    cache, so that its tokenization is cached too; `rows_name` says what a row is in the "no rows" error.

    `file_stamps` (see `file_stamps`) is a generator argument only so that it enters the datasets cache
    key: an edited file is read again instead of being served from the cache. A
    `DataError` raised by the generator comes out as it is.
    """
    try:
        with datasets_progress_bars_off():  # as in read_files
            dataset = datasets.Dataset.from_generator(
                generator,
                features=features,
                cache_dir=cache_dir,
                split=split,
                gen_kwargs={
                    "paths": [str(path) for path in files],
                    **generator_kwargs,
                    "file_stamps": file_stamps(files),
                },
            )
    except datasets.exceptions.DatasetGenerationError as error:
        if isinstance(error.__cause__, DataError):
            raise error.__cause__ from None
        check_cache_writable(error, cache_dir)
        reason = error.__cause__ or error
        if isinstance(reason, UnicodeDecodeError):
            raise DataError(_not_utf8_message(files)) from error
        raise DataError(f"Could not read split '{split}' from {[str(p) for p in files]}: {reason}") from error
    except ValueError as error:
        if "corresponds to no data" not in str(error):  # datasets refuses to build a split of no rows
            raise
        dataset = None
    if dataset is None or len(dataset) == 0:
        raise DataError(f"Split '{split}' file(s) {[str(path) for path in files]} hold no {rows_name}.")
    return dataset


def load_hub_splits(
    dataset_id: str, config_name: str | None = None, cache_dir: str | None = None
) -> tuple[datasets.DatasetDict, dict[str, str]]:
    """Load every split of a hub dataset (or a locally cached copy of it) with `datasets.load_dataset`; an
    unreachable hub leaves the cached copy only, and no copy is one sentence naming `data_dir`."""
    offline = hub_unreachable()
    try:
        with offline_hub(offline):
            loaded = datasets.load_dataset(dataset_id, config_name, cache_dir=cache_dir)
    except Exception as error:  # noqa: BLE001 - the hub client raises many unrelated types; all mean "not loadable"
        config_text = f" with config '{config_name}'" if config_name else ""
        if offline:
            raise DataError(
                f"Could not load hub dataset '{dataset_id}'{config_text}: the hub is not reachable (offline)"
                f" and there is no cached copy; {LOCAL_DATA_HINT}."
            ) from error
        raise DataError(
            f"Could not load hub dataset '{dataset_id}'{config_text} (unknown id or config?): {error};"
            f" for local files, {LOCAL_DATA_HINT}."
        ) from error
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(f"Hub dataset '{dataset_id}' did not load as a dictionary of splits.")
    config_text = f", config '{config_name}'" if config_name else ""
    origins = {name: f"hub dataset '{dataset_id}'{config_text}, split '{name}'" for name in loaded}
    for name, dataset in loaded.items():
        if len(dataset) == 0:
            raise DataError(f"Split '{name}' of {origins[name]} has no rows.")
    return loaded, origins
