"""Token classification (named entities, part-of-speech, chunks) on words, with long inputs cut into windows.

Rows hold a list of words and one tag per word, from a hub dataset (default `eriktks/conll2003`), local
split files with the same columns, or CoNLL column files. Words are tokenized with the fast tokenizer
(`is_split_into_words=True`) and the tags are aligned through `word_ids()`: the first sub-token of a word
carries its tag, later sub-tokens -100 (or, with `label_all_tokens`, the tag with `B-X` turned into `I-X`).

A row longer than `max_length` tokens becomes several overlapping windows (features), each carrying the
row's `example_index`. Training may see a word in several windows; for evaluation and prediction every
word is scored exactly once, on the first sub-token of the word in the window that gives it the most
context, marked by the per-token `word_ids` column (the word's index there, -1 elsewhere). Collecting the
predictions at `word_ids >= 0` per `example_index` therefore yields one prediction per word, in order.

For prediction on raw text (`predict_file`), words come from the tokenizer's pre-tokenizer together with
their character offsets, so that word predictions can be written back as character spans of the text
(`TokenClassificationDataModule.predict_examples`).

This module holds the datamodule and its collator; the pieces it puts together live in `conll` (CoNLL
column files), `word_tags` (tag names and column checks), `token_alignment` (windows and tag alignment)
and `predict_text` (raw texts and word offsets).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch

from neobert_tasks.data.base import TokenizedDataModule
from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.collator import padded_length
from neobert_tasks.data.conll import CONLL_SUFFIXES, find_word_split_files, load_conll_split
from neobert_tasks.data.keys import ATTENTION_MASK, EXAMPLE_INDEX, INPUT_IDS, LABELS, WORD_IDS
from neobert_tasks.data.labels import label_kind
from neobert_tasks.data.predict_text import WORDS_COLUMN, join_words, load_text_file, split_text_into_words
from neobert_tasks.data.sources import DataError, MissingDataError, load_hub_splits, load_local_splits
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.data.token_alignment import (
    IGNORE_INDEX,
    NO_WORD,
    continuation_labels,
    encode_word_windows,
)
from neobert_tasks.data.word_tags import check_tags, check_words, tag_names_from_split

# ----------------------------------------------------------------------------------------------------------
# Padding.


class TokenClassificationCollator:
    """Pads windows to the longest of the batch, rounded up to a multiple of `pad_to_multiple_of`.

    `input_ids` are padded with the pad token, `attention_mask` with 0, `labels` with -100 and `word_ids`
    with -1, so padding is neither trained on nor scored; `example_index` is one number per window.
    """

    def __init__(
        self, pad_token_id: int, pad_to_multiple_of: int | None, padding_side: str = "right"
    ) -> None:
        self.pad_values = {
            "input_ids": pad_token_id,
            "attention_mask": 0,
            "labels": IGNORE_INDEX,
            "word_ids": NO_WORD,
        }
        self.pad_to_multiple_of = pad_to_multiple_of or 1
        self.padding_side = padding_side

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        longest = max(len(feature["input_ids"]) for feature in features)
        length = padded_length(longest, self.pad_to_multiple_of)
        batch = {}
        for key, pad_value in self.pad_values.items():
            if key not in features[0]:
                continue  # unlabelled splits have no labels
            padded = torch.full((len(features), length), pad_value, dtype=torch.long)
            for row, feature in enumerate(features):
                values = torch.as_tensor(feature[key], dtype=torch.long)
                if self.padding_side == "left":
                    padded[row, length - len(values) :] = values
                else:
                    padded[row, : len(values)] = values
            batch[key] = padded
        batch[EXAMPLE_INDEX] = torch.tensor([feature[EXAMPLE_INDEX] for feature in features])
        return batch


# ----------------------------------------------------------------------------------------------------------
# The datamodule.


class TokenClassificationDataModule(TokenizedDataModule):
    """Tag every word of a sentence or document (NER by default: CoNLL-2003), in overlapping windows.

    Args:
        dataset: hub dataset id loaded with `datasets.load_dataset`; used when `data_dir` is None.
        dataset_config: configuration (subset) name of the hub dataset, if it has several.
        data_dir: local directory with `<split>.parquet|json|jsonl` files (same columns as the hub data) or
            CoNLL column files `<split>.conll|txt` (one word per line, whitespace-separated columns, a blank
            line between sentences, `-DOCSTART-` lines skipped); splits are train, validation and test.
        tokens_column: column holding each row's list of words.
        tags_column: column holding each row's list of tags (ids or names), one per word.
        conll_tag_column: which column of a CoNLL file holds the tag (negative counts from the end).
        label_names: tag names in id order; None reads them from the training split (the `ClassLabel` names,
            or for CoNLL files and string tags the sorted tags seen, with "O" first). Give them to predict
            without the training data.
        label_all_tokens: label every sub-token of a word (a `B-X` word's later pieces get `I-X`) instead of
            only its first sub-token; each word is still scored once, on its first sub-token.
        stride: tokens of overlap between consecutive windows of a long row.
        predict_file: raw texts to predict: a .txt file with one sentence or document per line, or a
            .jsonl/.json/.parquet file with a `text` column; None predicts the test split (else validation).

    Batches hold `input_ids`, `attention_mask`, `labels` (-100 where not trained on; absent without
    tags), `word_ids` (the word a token scores, -1 elsewhere) and `example_index` (the row of each window).
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    train_split_name = "train"
    model_input_keys = (INPUT_IDS, ATTENTION_MASK, LABELS, WORD_IDS, EXAMPLE_INDEX)

    def __init__(
        self,
        dataset: str | None = "eriktks/conll2003",
        dataset_config: str | None = None,
        data_dir: str | None = None,
        tokens_column: str = "tokens",
        tags_column: str = "ner_tags",
        conll_tag_column: int = -1,
        label_names: list[str] | None = None,
        label_all_tokens: bool = False,
        stride: int = 128,
        predict_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dataset is None and data_dir is None:
            raise DataError("Give a hub dataset id (dataset) or a local data_dir; both are None.")
        if not 0 <= stride < self.max_length:
            raise DataError(f"stride ({stride}) must be at least 0 and below max_length ({self.max_length}).")
        if tokens_column == tags_column:
            raise DataError(f"tokens_column and tags_column are both '{tokens_column}'.")
        if conll_tag_column == 0:
            raise DataError("conll_tag_column 0 is the word column of a CoNLL file; tags are in another one.")
        self.dataset_id = dataset
        self.dataset_config = dataset_config
        self.data_dir = data_dir
        self.tokens_column = tokens_column
        self.tags_column = tags_column
        self.conll_tag_column = conll_tag_column
        self.label_all_tokens = label_all_tokens
        self.stride = stride
        self.predict_file = predict_file
        self._label_names = self._resolve_label_names(label_names)
        self.save_hyperparameters()
        # Record the resolved names over the given (often None) value: the CLI links them into the model's
        # hparams, and Lightning refuses to log a key that holds different values in the two.
        self.save_hyperparameters({**self.hparams, "label_names": list(self._label_names)})

    # ------------------------------------------------------------------------------------------------------
    # Label information, available right after __init__ for LightningCLI argument linking.

    @property
    def label_names(self) -> list[str]:
        """Tag names in id order."""
        return list(self._label_names)

    @property
    def num_labels(self) -> int:
        """Number of tags the model predicts per token."""
        return len(self._label_names)

    @property
    def main_metric(self) -> str:
        """Metric used to pick the best checkpoint: entity-level F1."""
        return "f1"

    def _resolve_label_names(self, label_names: list[str] | None) -> list[str]:
        """The explicit names, else the hub's `ClassLabel` names, else those found in the training split."""
        if label_names is not None:
            if not label_names or len(set(label_names)) != len(label_names):
                raise DataError(f"label_names must be distinct names, got {label_names}.")
            return list(label_names)
        if self.data_dir is None:
            names = self._hub_tag_names()
            if names is not None:
                return names
        raw, origins = self.load_raw_splits([self.train_split_name])
        if self.train_split_name not in raw:
            raise DataError(
                f"No '{self.train_split_name}' split in {self.data_source} to read the tag names from;"
                " set label_names."
            )
        origin = origins[self.train_split_name]
        require_columns(raw[self.train_split_name], [self.tags_column], origin)
        return tag_names_from_split(raw[self.train_split_name], self.tags_column, origin)

    def _hub_tag_names(self) -> list[str] | None:
        """`ClassLabel` names from the hub dataset's metadata, without downloading data; None if not there."""
        try:
            builder = datasets.load_dataset_builder(
                self.dataset_id, self.dataset_config, cache_dir=self.cache_dir
            )
        except Exception:  # noqa: BLE001 - loading the data next reports the problem in one sentence
            return None
        feature = (builder.info.features or {}).get(self.tags_column)
        return list(feature.feature.names) if label_kind(feature) == "list_class_label" else None

    # ------------------------------------------------------------------------------------------------------
    # TokenizedDataModule hooks.

    @property
    def data_source(self) -> str:
        if self.data_dir is not None:
            return f"directory '{self.data_dir}'"
        config_text = f" (config '{self.dataset_config}')" if self.dataset_config else ""
        return f"hub dataset '{self.dataset_id}'{config_text}"

    @property
    def configured_validation_splits(self) -> list[str]:
        return ["validation"]

    @property
    def configured_test_splits(self) -> list[str]:
        return ["test"]

    def local_split_names(self) -> set[str] | None:
        if self.data_dir is None or not Path(self.data_dir).is_dir():
            return None
        return set(find_word_split_files(self.data_dir))

    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        if self.data_dir is None:
            loaded, origins = load_hub_splits(self.dataset_id, self.dataset_config, self.cache_dir)
            wanted = [name for name in split_names if name in loaded]
            return datasets.DatasetDict({name: loaded[name] for name in wanted}), origins
        split_files = find_word_split_files(self.data_dir)
        wanted = [name for name in split_names if name in split_files]
        if not wanted:
            raise MissingDataError(
                f"Data directory '{self.data_dir}' has no files for splits {list(split_names)}"
                f" (splits found: {', '.join(sorted(split_files)) or 'none'}; files are named"
                " <split>.parquet|json|jsonl|conll|txt)."
            )
        loaded, origins = datasets.DatasetDict(), {}
        for name in wanted:
            files = split_files[name]
            suffixes = {path.suffix for path in files}
            if len(suffixes) > 1:
                raise DataError(
                    f"Split '{name}' mixes file formats {sorted(suffixes)}: {[str(p) for p in files]}."
                )
            if files[0].suffix in CONLL_SUFFIXES:
                loaded[name] = load_conll_split(
                    name, files, self.tokens_column, self.tags_column, self.conll_tag_column, self.cache_dir
                )
                origins[name] = ", ".join(str(path) for path in files)
            else:
                tabular, tabular_origins = load_local_splits(self.data_dir, [name], self.cache_dir)
                loaded[name], origins[name] = tabular[name], tabular_origins[name]
        return loaded, origins

    def empty_text_columns(self) -> Sequence[str]:
        return (self.tokens_column,)

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        if split_name == PREDICT_SPLIT and self.predict_file is not None:
            return  # words and offsets were made from the text by `split_text_into_words`
        # Test splits may come without tags (prediction only); the others are evaluated, so they need them.
        labelled = split_name not in self.configured_test_splits or self.tags_column in dataset.column_names
        require_columns(dataset, [self.tokens_column, self.tags_column if labelled else None], origin)
        check_words(dataset, self.tokens_column, origin)
        if labelled:
            check_tags(dataset, self.tokens_column, self.tags_column, self._label_names, origin)

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> Callable[..., dict[str, list]]:
        tokenizer = self.tokenizer
        if not tokenizer.is_fast:
            raise DataError(
                f"Tokenizer '{self.tokenizer_name_or_path}' is not a fast tokenizer (no word_ids)."
            )
        if tokenizer.truncation_side != "right":
            # Windows cut from the end would break the left-to-right positions `token_positions` assumes.
            raise DataError(
                f"Tokenizer '{self.tokenizer_name_or_path}' truncates on the {tokenizer.truncation_side};"
                " windows need truncation_side 'right'."
            )
        special_tokens = tokenizer.num_special_tokens_to_add(pair=False)
        if self.stride >= self.max_length - special_tokens:
            raise DataError(
                f"stride ({self.stride}) must be below max_length ({self.max_length}) minus the"
                f" {special_tokens} special tokens of each window."
            )
        from_text = split_name == PREDICT_SPLIT and self.predict_file is not None
        labelled = not from_text and self.tags_column in dataset.column_names
        string_tags = labelled and label_kind(dataset.features[self.tags_column]) == "list_str"
        return functools.partial(
            encode_word_windows,
            tokenizer=tokenizer,
            tokens_column=WORDS_COLUMN if from_text else self.tokens_column,
            tags_column=self.tags_column if labelled else None,
            tag_to_index={name: index for index, name in enumerate(self._label_names)}
            if string_tags
            else None,
            continuation=continuation_labels(self._label_names),
            max_length=self.max_length,
            stride=self.stride,
            label_all_tokens=self.label_all_tokens,
        )

    # ------------------------------------------------------------------------------------------------------
    # Collator, stages and prediction on raw text.

    @property
    def collator(self) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
        """Pads labels and word ids too, which the base's `ModelInputCollator` leaves unpadded."""
        if self._collator is None:
            tokenizer = self.tokenizer
            self._collator = TokenClassificationCollator(
                tokenizer.pad_token_id, self.pad_to_multiple_of, tokenizer.padding_side
            )
        return self._collator

    def example_indexing(self, split_name: str) -> str:
        """A sentence can become several windows: the encoder sets each window's `example_index`."""
        return "encoder"

    def load_predict_file(self) -> datasets.Dataset:
        """The predict file's texts with their words and character offsets (a cached `map`)."""
        texts = load_text_file(self.predict_file, self.cache_dir)
        return texts.map(
            functools.partial(split_text_into_words, tokenizer=self.tokenizer),
            batched=True,
            desc="Splitting texts into words",
        )

    def predict_examples(self, split_name: str | None = None) -> dict[int, dict[str, Any]]:
        """Per example index (the `example_index` of its windows): the example's `text`, its `words` and their
        `word_offsets` ([start, end] character offsets, so `text[start:end]` is the word), to turn word
        predictions into entities with character spans.

        `split_name` defaults to the (first) predicted split, which must have been set up. For a dataset split
        the words are its tokens and the text is those tokens joined by single spaces.
        """
        name = split_name or self.predict_split_names[0]
        if name not in self.raw_examples:
            raise DataError(
                f"Split '{name}' is not loaded; call setup('predict') (or another stage using it) first."
            )
        examples = self.raw_examples[name]
        if name == PREDICT_SPLIT and self.predict_file is not None:
            examples = examples.select_columns(["text", WORDS_COLUMN, "word_offsets"])
        else:
            examples = examples.map(
                functools.partial(join_words, tokens_column=self.tokens_column),
                batched=True,
                remove_columns=examples.column_names,
                desc=f"Joining the words of {name}",
            )
        return dict(enumerate(examples.to_list()))
