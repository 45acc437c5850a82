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

This module holds the datamodule; the pieces it puts together live in `conll` (CoNLL column files),
`word_tags` (tag names and column checks), `token_alignment` (windows and tag alignment), `predict_text`
(raw texts and word offsets) and `collator` (padding windows).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import datasets

from neobert_tasks.data.base import TokenizedDataModule
from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.collator import WINDOW_KEYS, TokenClassificationCollator
from neobert_tasks.data.conll import find_word_split_files, load_word_splits
from neobert_tasks.data.hub_or_local import HubOrLocalSource
from neobert_tasks.data.labels import label_kind
from neobert_tasks.data.predict_text import WORDS_COLUMN, join_words, load_text_file, split_text_into_words
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.data.token_alignment import continuation_labels, encode_word_windows
from neobert_tasks.data.word_tags import check_tags, check_words, tag_index_map, tag_names_from_split


class TokenClassificationDataModule(HubOrLocalSource, TokenizedDataModule):
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

    model_input_keys = WINDOW_KEYS

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
        self.set_data_source(dataset, dataset_config, data_dir)
        if not 0 <= stride < self.max_length:
            raise DataError(f"stride ({stride}) must be at least 0 and below max_length ({self.max_length}).")
        if tokens_column == tags_column:
            raise DataError(f"tokens_column and tags_column are both '{tokens_column}'.")
        if conll_tag_column == 0:
            raise DataError("conll_tag_column 0 is the word column of a CoNLL file; tags are in another one.")
        self.tokens_column, self.tags_column = tokens_column, tags_column
        self.conll_tag_column, self.label_all_tokens = conll_tag_column, label_all_tokens
        self.stride, self.predict_file = stride, predict_file
        self._label_names = self._resolve_label_names(label_names)
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
        if self.data_dir is None and (names := self._hub_tag_names()) is not None:
            return names
        train, origin = self.training_column(self.tags_column, "read the tag names from; set label_names")
        self.names_from_strings = label_kind(train.features[self.tags_column]) == "list_str"
        return tag_names_from_split(train, self.tags_column, origin)

    names_from_strings = False  # the tag names were sorted from the training split's text tags

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

    def find_local_split_files(self) -> dict[str, list[Path]]:
        """Tabular split files and CoNLL column files."""
        return find_word_split_files(self.data_dir)

    def load_local_split_files(
        self, split_names: Sequence[str]
    ) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """Tabular split files and CoNLL column files, one format per split."""
        return load_word_splits(
            self.data_dir,
            split_names,
            self.tokens_column,
            self.tags_column,
            self.conll_tag_column,
            self.cache_dir,
        )

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
            if self.names_from_strings and label_kind(dataset.features[self.tags_column]) == "list_int":
                # Ids against names sorted from training's text tags: the sorted order is a guess, and a
                # wrong one scores every word against another tag, silently.
                raise DataError(
                    f"Tag column '{self.tags_column}' of {origin} holds integer ids, but the tag names come"
                    f" from the training split's text tags {self._label_names}: write the tags as names, or"
                    " set data.init_args.label_names to the names in id order."
                )
            check_tags(dataset, self.tokens_column, self.tags_column, self._label_names, origin)

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> Callable[..., dict[str, list]]:
        tokenizer = self.window_tokenizer("no word_ids", "stride", self.stride, pair=False)
        if tokenizer.truncation_side != "right":
            # Windows cut from the end would break the left-to-right positions `token_positions` assumes.
            raise DataError(
                f"Tokenizer '{self.tokenizer_name_or_path}' truncates on the {tokenizer.truncation_side};"
                " windows need truncation_side 'right'."
            )
        from_text = split_name == PREDICT_SPLIT and self.predict_file is not None
        labelled = not from_text and self.tags_column in dataset.column_names
        features = dataset.features
        tag_to_index = tag_index_map(features[self.tags_column], self._label_names) if labelled else None
        return functools.partial(
            encode_word_windows,
            tokenizer=tokenizer,
            tokens_column=WORDS_COLUMN if from_text else self.tokens_column,
            tags_column=self.tags_column if labelled else None,
            tag_to_index=tag_to_index,
            continuation=continuation_labels(self._label_names),
            max_length=self.max_length,
            stride=self.stride,
            label_all_tokens=self.label_all_tokens,
        )

    # ------------------------------------------------------------------------------------------------------
    # Collator, stages and prediction on raw text.

    def make_collator(self) -> TokenClassificationCollator:
        """Pads labels and word ids too, which the base's collator leaves unpadded."""
        tokenizer = self.tokenizer
        return TokenClassificationCollator(
            tokenizer.pad_token_id, self.pad_to_multiple_of, tokenizer.padding_side
        )

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

    def gold_tags(self, split_name: str) -> dict[int, list[str]] | None:
        """Per example index (as `predict_examples` numbers them), its tag names, when the split has tags."""
        examples = self.raw_examples.get(split_name)
        if examples is None or self.tags_column not in examples.column_names:
            return None
        feature = examples.features[self.tags_column]
        as_names = label_kind(feature) == "list_str"
        # ClassLabel ids are named by the data's own names (`check_tags` allows another order in label_names).
        names = feature.feature.names if label_kind(feature) == "list_class_label" else self._label_names
        rows = examples[self.tags_column]
        return {row: list(tags) if as_names else [names[t] for t in tags] for row, tags in enumerate(rows)}

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
