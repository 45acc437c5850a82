"""Where a datamodule's raw splits come from: a hub dataset (id and config) or a local `data_dir`.

`HubOrLocalSource` is mixed into the datamodules that offer both. Each declares the `dataset`,
`dataset_config` and `data_dir` options itself (their defaults and help differ) and hands them to
`set_data_source`; the mixin names the source in error messages, knows which splits a local directory
has before anything is loaded, and loads the requested splits: a hub dataset's with `load_hub_splits`,
a directory's with `load_local_split_files`, which a task whose files have a format of its own (CoNLL,
official SQuAD JSON, plain text) overrides together with `find_local_split_files`. `training_column` reads
what a model is built with (label names) from the training split before anything is tokenized.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import datasets

from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.sources import DataError, find_split_files, load_hub_splits, load_local_splits


class HubOrLocalSource:
    """Raw splits from hub dataset `dataset_id` (config `dataset_config`), or from `data_dir` when set."""

    dataset_id: str | None = None
    dataset_config: str | None = None
    data_dir: str | None = None
    cache_dir: str | None  # set by `TokenizedDataModule`
    train_split_name: str  # declared by `SplitBookkeeping`

    def set_data_source(
        self,
        dataset: str | None,
        dataset_config: str | None,
        data_dir: str | None,
        required: bool = True,
        exclusive: bool = False,
    ) -> None:
        """Remember where the splits come from; unless `required` is false, one of the two must be given, and
        with `exclusive` not both."""
        if exclusive and dataset is not None and data_dir is not None:
            raise DataError(
                f"Give one of dataset (hub id) or data_dir, not both: {dataset!r} and {data_dir!r}."
            )
        if required and dataset is None and data_dir is None:
            raise DataError("Give a hub dataset id (dataset) or a local data_dir; both are None.")
        self.dataset_id, self.dataset_config, self.data_dir = dataset, dataset_config, data_dir

    @property
    def data_source(self) -> str:
        """Where the raw data comes from, for error messages."""
        if self.data_dir is not None:
            return f"directory '{self.data_dir}'"
        config_text = f" (config '{self.dataset_config}')" if self.dataset_config else ""
        return f"hub dataset '{self.dataset_id}'{config_text}"

    def find_local_split_files(self) -> dict[str, list[Path]]:
        """Split name -> files of `data_dir`; `MissingDataError` when the directory does not exist."""
        return find_split_files(self.data_dir)

    def local_split_names(self) -> set[str] | None:
        """Splits with files in `data_dir`; None for a hub dataset, or a directory that is missing (loading
        it says so)."""
        if self.data_dir is None or not Path(self.data_dir).is_dir():
            return None
        return set(self.find_local_split_files())

    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """Those of `split_names` that exist, with a readable origin per split."""
        if self.data_dir is not None:
            return self.load_local_split_files(split_names)
        loaded, origins = load_hub_splits(self.dataset_id, self.dataset_config, self.cache_dir)
        return datasets.DatasetDict({name: loaded[name] for name in split_names if name in loaded}), origins

    def load_local_split_files(
        self, split_names: Sequence[str]
    ) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """The splits among `split_names` that have files in `data_dir` (tabular files by default)."""
        return load_local_splits(self.data_dir, split_names, self.cache_dir)

    def training_column(self, column: str, purpose: str) -> tuple[datasets.Dataset, str]:
        """`column` of the training split and the split's origin, read before any tokenizing for what the
        model is built with; `purpose` ends the error for a missing split ("... to <purpose>.")."""
        name = self.train_split_name
        raw, origins = self.load_raw_splits([name])
        if name not in raw:
            raise DataError(f"No '{name}' split in {self.data_source} to {purpose}.")
        require_columns(raw[name], [column], origins[name])
        return raw[name].select_columns([column]), origins[name]
