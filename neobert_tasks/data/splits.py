"""Which splits a datamodule defines, which of them exist, and which ones each stage needs.

`SplitBookkeeping` is the part of `TokenizedDataModule` that knows split names: validation and test splits
in dataloader order (metrics are named after them), the splits `predict` runs on, and, per stage, the
splits to load and the ones that must exist. A split asked for but absent is remembered, so split name
lists drop it without loading the data again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import datasets

from neobert_tasks.data.sources import DataError

# Split name of a `predict_file`'s rows.
PREDICT_SPLIT = "predict"


class SplitBookkeeping(ABC):
    """Split names by stage; `TokenizedDataModule` sets `datasets`, `raw_examples`, `_missing_splits`."""

    train_split_name = "train"
    # The one validation and one test split of most tasks (options of some; None: no such split).
    validation_split: str | None = "validation"
    test_split: str | None = "test"
    # A raw text file to predict on instead of a split; subclasses that offer it declare the option.
    predict_file: str | None = None
    predict_split: str | None = None  # the split predict runs on instead of the test splits (an option)
    datasets: dict[str, datasets.Dataset]
    raw_examples: dict[str, datasets.Dataset]
    _missing_splits: set[str]

    @property
    @abstractmethod
    def data_source(self) -> str:
        """Where the raw data comes from, for error messages (a directory or a hub id)."""

    @property
    def configured_validation_splits(self) -> list[str]:
        """Validation splits the task defines, in dataloader order, whether or not the data has them."""
        return [self.validation_split] if self.validation_split else []

    @property
    def configured_test_splits(self) -> list[str]:
        """Test splits the task defines (may be empty), in dataloader order."""
        return [self.test_split] if self.test_split else []

    @abstractmethod
    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """Load those of `split_names` that exist; return them with a readable origin per split."""

    @property
    def validation_split_names(self) -> list[str]:
        """Validation splits that exist, in dataloader order; known right after `__init__` for local data."""
        return self.present_splits(self.configured_validation_splits)

    @property
    def test_split_names(self) -> list[str]:
        """Test splits that exist, in dataloader order."""
        return self.present_splits(self.configured_test_splits)

    @property
    def predict_split_names(self) -> list[str]:
        """Splits `predict` runs on: the predict file's, else the test splits, else the validation splits."""
        if self.predict_file is not None:
            return [PREDICT_SPLIT]
        if self.predict_split is not None:
            return [self.predict_split]
        return self.test_split_names or self.validation_split_names

    def split_description(self, split_name: str) -> str:
        """A predicted split as a user reads it: the predict file, or the split and why it was used."""
        if split_name == PREDICT_SPLIT and self.predict_file is not None:
            return f"predict file '{self.predict_file}'"
        if split_name == self.predict_split:
            return f"split '{split_name}' (data.init_args.predict_split)"
        if split_name in self.test_split_names:
            return f"test split '{split_name}'"
        return f"validation split '{split_name}' (the data has no test split)"

    def split_names_for(self, stage: str) -> list[str]:
        """Split name of each dataloader index of `stage` (validate, test or predict), to name metrics."""
        if stage in ("fit", "validate", "validation"):
            return self.validation_split_names
        if stage in ("test", "predict"):
            return self.test_split_names if stage == "test" else self.predict_split_names
        raise ValueError(
            f"Unknown stage '{stage}'; expected one of fit, validate, validation, test, predict."
        )

    def local_split_names(self) -> set[str] | None:
        """Splits that have files, when that is cheap to know before loading (local directory), else None."""
        return None

    def present_splits(self, split_names: Sequence[str]) -> list[str]:
        """`split_names` minus those known to be absent: no local file, or not found when data was loaded."""
        local = self.local_split_names()
        return [
            name
            for name in split_names
            if name not in self._missing_splits and (local is None or name in local)
        ]

    def _load(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """Load raw splits through the subclass and remember which of the requested ones do not exist."""
        raw, origins = self.load_raw_splits(split_names)
        self._missing_splits.update(name for name in split_names if name not in raw)
        return raw, origins

    def _all_split_names(self) -> list[str]:
        names = [self.train_split_name, *self.configured_validation_splits, *self.configured_test_splits]
        return list(dict.fromkeys(names))

    def _dataset(self, name: str, splits: dict[str, datasets.Dataset] | None = None) -> datasets.Dataset:
        """The tokenized split `name` (or the one of `splits`); `DataError` when it is not loaded."""
        splits = self.datasets if splits is None else splits
        if name not in splits:
            raise DataError(f"Split '{name}' is not loaded; call setup() for a stage that uses it first.")
        return splits[name]

    def examples(self, split_name: str) -> datasets.Dataset:
        """The raw rows of an evaluated split as they were tokenized (limited, empty texts skipped)."""
        return self._dataset(split_name, self.raw_examples)

    def _stage_requirements(self, stage: str | None) -> tuple[list[str], list[str], bool]:
        """Splits to load for `stage`, the ones that must exist, and whether one of them is enough."""
        validation, test = self.configured_validation_splits, self.configured_test_splits
        if stage == "fit":
            return [self.train_split_name, *validation], [self.train_split_name], False
        if stage == "validate":
            return validation, validation, True
        if stage == "test":
            return test, test, True
        if stage == "predict" and self.predict_split is not None:
            return [self.predict_split], [self.predict_split], False
        if stage == "predict":
            candidates = list(dict.fromkeys([*test, *validation]))
            return candidates, candidates, True
        return self._all_split_names(), [], False
