"""Raw text for masked language modelling: loading, optional tokenizer training, packing into full rows.

`TextDataModule` reads documents from a hub dataset (optionally streamed) or a local directory and
turns them into model rows in one of two ways:

* ``packing: true`` (default): every document is tokenized with its own ``[CLS] … [SEP]``, the
  documents are laid end to end in one token stream, and the stream is cut into rows of exactly
  ``max_length`` tokens. ``position_ids`` restart at 0 at every document start, which is what tells the
  NeoBERT backbone to keep packed documents from attending to each other. A document that crosses a
  row boundary (or is longer than ``max_length``) is cut there and continues at the start of the next
  row as a new segment whose positions restart at 0: no token is dropped or added, but the pieces of a
  cut document do not see each other. Only the last row of each packing batch (``PACKING_BATCH_SIZE``
  documents) can be shorter, and the collator pads it.
* ``packing: false``: one document per row; a document longer than ``max_length`` is split into
  several rows of at most ``max_length`` tokens, each wrapped in its own ``[CLS] … [SEP]``; batches
  are padded dynamically.

Local data: ``<split>.txt`` holds one document per non-empty line; ``<split>.parquet|csv|tsv|json|jsonl``
holds one document per row in ``text_column``. Without a validation split, ``validation_fraction`` of
the training documents is held out (a fixed seed, so the split and its tokenization are cached).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from datasets.distributed import split_dataset_by_node
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from neobert_tasks.data.base import EncodeFunction, TokenizedDataModule
from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.collator import ModelInputCollator
from neobert_tasks.data.hub_or_local import HubOrLocalSource
from neobert_tasks.data.keys import ATTENTION_MASK, EXAMPLE_INDEX, INPUT_IDS
from neobert_tasks.data.loaders import distributed_kwargs
from neobert_tasks.data.predict_text import load_text_file
from neobert_tasks.data.sources import DataError, MissingDataError
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.data.text_encoding import (
    PACKED_KEYS,
    PackedCollator,
    encode_texts,
    pack_documents,
    split_documents,
    train_wordpiece_tokenizer,
)
from neobert_tasks.data.text_sources import hold_out_validation, load_text_directory, stream_hub_splits
from neobert_tasks.data.tokenizer import asks_for_new_tokenizer, load_tokenizer

# Documents packed together in one `map` batch: the last row of each batch may be short, so a large
# batch keeps padding rare.
PACKING_BATCH_SIZE = 2000
# Documents read from a streamed training split to train a tokenizer on.
STREAMING_TOKENIZER_DOCUMENTS = 100_000


class TextDataModule(HubOrLocalSource, TokenizedDataModule):
    """Documents of raw text for masked language modelling, packed or one per row.

    Args:
        tokenizer: Tokenizer directory or hub id. A directory that does not exist is trained from
            scratch on the training texts (``train_tokenizer``) and saved there; ``null`` saves it under
            ``<cache_dir>/tokenizer`` (``./tokenizer`` without a cache directory).
        dataset: Hub dataset id (used when ``data_dir`` is not set).
        dataset_config: Hub dataset configuration name, e.g. ``wikitext-103-raw-v1``.
        data_dir: Local directory of ``<split>.txt`` (one document per line) or
            ``<split>.parquet|csv|tsv|json|jsonl`` files.
        text_column: Column holding the documents.
        packing: Pack documents into rows of exactly ``max_length`` tokens (see the module docstring).
        streaming: Stream the hub dataset (``load_dataset(..., streaming=True)``) instead of downloading
            it; packing then happens on the fly and batches are not grouped by length.
        validation_fraction: Fraction of the training documents held out when there is no validation
            split (a streamed dataset holds out its first 1000 documents instead).
        train_tokenizer: Train a WordPiece tokenizer when ``tokenizer`` does not exist; False makes a
            missing tokenizer an error.
        tokenizer_vocab_size: Vocabulary size of a tokenizer trained from scratch.
        predict_file: Texts whose ``[MASK]`` tokens ``predict`` fills in: a .txt file with one text per
            line, or a .jsonl/.json/.parquet file with a ``text`` column; no other data is needed then.
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    def __init__(
        self,
        tokenizer: str | None = "chandar-lab/NeoBERT",
        dataset: str | None = None,
        dataset_config: str | None = None,
        data_dir: str | None = None,
        text_column: str = "text",
        packing: bool = True,
        streaming: bool = False,
        validation_fraction: float = 0.01,
        train_tokenizer: bool = True,
        tokenizer_vocab_size: int = 30522,
        predict_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer=tokenizer, empty_texts="skip", **kwargs)  # packed text has no empty rows
        only_predicting = predict_file is not None and dataset is None and data_dir is None
        if (dataset is None) == (data_dir is None) and not only_predicting:
            raise DataError(
                "Set exactly one of data.init_args.dataset (a hub id) and data.init_args.data_dir (a local"
                " folder)."
            )
        if streaming and data_dir is not None:
            raise DataError(
                "data.init_args.streaming applies to hub datasets only; unset it for data.init_args.data_dir."
            )
        if streaming and self.max_tokens is not None:
            raise DataError(
                "data.init_args.max_tokens needs an indexed dataset; unset it for data.init_args.streaming."
            )
        if not 0.0 <= validation_fraction < 1.0:
            raise DataError(f"validation_fraction must be in [0, 1), got {validation_fraction}.")
        self.set_data_source(dataset, dataset_config, data_dir, required=False)  # checked just above
        self.text_column, self.packing, self.streaming = text_column, packing, streaming
        self.validation_fraction, self.train_tokenizer = validation_fraction, train_tokenizer
        self.tokenizer_vocab_size, self.predict_file = tokenizer_vocab_size, predict_file
        self.model_input_keys = PACKED_KEYS if packing else ("input_ids", "attention_mask")

    # ----------------------------------------------------------------------------------------------------
    # Values linked to the task by the command line.

    @property
    def mask_token_id(self) -> int:
        return self.tokenizer.mask_token_id

    @property
    def special_token_ids(self) -> list[int]:
        return sorted(set(self.tokenizer.all_special_ids))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    # ----------------------------------------------------------------------------------------------------
    # Tokenizer: loaded, or trained from scratch.

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        if self._tokenizer is None:
            name = self.tokenizer_name_or_path
            if self.train_tokenizer and asks_for_new_tokenizer(name):
                self._tokenizer = self._train_tokenizer()
            else:
                self._tokenizer = load_tokenizer(name) if name is not None else self._no_tokenizer()
        return self._tokenizer

    @staticmethod
    def _no_tokenizer():
        raise DataError(
            "data.init_args.tokenizer is null and data.init_args.train_tokenizer is false: no tokenizer to"
            " use."
        )

    def _train_tokenizer(self) -> PreTrainedTokenizerFast:
        raw, _ = self.load_raw_splits([self.train_split_name])
        if self.train_split_name not in raw:
            raise MissingDataError(f"No training split in {self.data_source} to train a tokenizer on.")
        limit = self.limit_train_samples
        if self.streaming and not limit:
            limit = STREAMING_TOKENIZER_DOCUMENTS
        train = self._limited(raw[self.train_split_name], limit)
        texts = (row[self.text_column] for row in train)
        name = self.tokenizer_name_or_path
        directory = Path(name).expanduser() if name is not None else Path(self.cache_dir or ".") / "tokenizer"
        tokenizer = train_wordpiece_tokenizer(texts, self.tokenizer_vocab_size, directory)
        rank_zero_info(
            f"Trained a WordPiece tokenizer of {len(tokenizer)} tokens on the training texts: {directory}"
        )
        return tokenizer

    # ----------------------------------------------------------------------------------------------------
    # TokenizedDataModule's pieces.

    def local_split_names(self) -> None:
        """Unknown before loading: a validation split may be held out of the training documents."""
        return None

    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[dict, dict[str, str]]:
        if self.streaming:
            raw, origins = stream_hub_splits(self.dataset_id, self.dataset_config, self.cache_dir)
        else:
            raw, origins = super().load_raw_splits(self._all_split_names())
        if "validation" not in raw and self.train_split_name in raw:
            hold_out_validation(
                raw, origins, self.train_split_name, self.validation_fraction, self.seed, self.streaming
            )
        wanted = [name for name in split_names if name in raw]
        return {name: raw[name] for name in wanted}, {name: origins[name] for name in wanted}

    def load_local_split_files(self, split_names: Sequence[str]) -> tuple[dict, dict[str, str]]:
        """`<split>.txt` files of one document per line, or tabular split files."""
        return load_text_directory(self.data_dir, split_names, self.cache_dir, self.text_column)

    def check_split(self, split_name: str, dataset, origin: str) -> None:
        # A predict file's texts were checked when it was read; a stream's columns are unknown until read.
        if split_name != PREDICT_SPLIT and getattr(dataset, "column_names", None) is not None:
            require_columns(dataset, [self.text_column], origin)

    def encode_function(self, split_name: str, dataset) -> EncodeFunction:
        if split_name == PREDICT_SPLIT:
            return functools.partial(encode_texts, tokenizer=self.tokenizer, max_length=self.max_length)
        function = pack_documents if self.packing else split_documents
        return functools.partial(
            function, tokenizer=self.tokenizer, text_column=self.text_column, max_length=self.max_length
        )

    def example_indexing(self, split_name: str) -> str:
        """Packed or split documents are not examples; a predict file's texts are, one row each."""
        return "encoder" if split_name == PREDICT_SPLIT else "none"

    def map_kwargs(self, split_name: str) -> dict[str, Any]:
        # Packing fills rows from several documents: larger map batches leave fewer partial rows.
        return {} if split_name == PREDICT_SPLIT else {"batch_size": PACKING_BATCH_SIZE}

    def load_predict_file(self):
        """The predict file's texts, one per row; a warning counts those without a [MASK] token."""
        texts = load_text_file(self.predict_file, self.cache_dir)
        without_mask = sum(self.tokenizer.mask_token not in text for text in texts["text"])
        if without_mask:
            rank_zero_warn(
                f"{without_mask} of {len(texts)} texts of predict file '{self.predict_file}' hold no"
                f" {self.tokenizer.mask_token} token: nothing is predicted for them."
            )
        return texts

    def after_tokenize(self, split_name: str, tokenized):
        """A predict file's texts are cut at ``max_length`` tokens: warn of those that lose a [MASK] so."""
        if split_name == PREDICT_SPLIT:
            mask_id, mask = self.tokenizer.mask_token_id, self.tokenizer.mask_token
            kept = [row.count(mask_id) for row in tokenized[INPUT_IDS][:]]
            asked = [text.count(mask) for text in self.raw_examples[PREDICT_SPLIT]["text"][:]]
            if cut := sum(left < wanted for left, wanted in zip(kept, asked, strict=True)):
                rank_zero_warn(
                    f"{cut} of {len(kept)} texts of predict file '{self.predict_file}' have a {mask} token"
                    f" past their first {self.max_length} tokens, where they are cut: it gets no prediction;"
                    " raise data.init_args.max_length to fill it."
                )
        return tokenized

    def predict_texts(self) -> list[str]:
        """The predict file's texts, in ``example_index`` order (after ``setup("predict")``)."""
        if PREDICT_SPLIT not in self.raw_examples:
            raise DataError("No predict file is loaded; set data.init_args.predict_file and run predict.")
        return list(self.raw_examples[PREDICT_SPLIT]["text"])

    # ----------------------------------------------------------------------------------------------------
    # Dataloaders.

    def make_collator(self) -> PackedCollator:
        return PackedCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of, self.model_input_keys)

    def train_dataloader(self) -> DataLoader:
        if not self.streaming:
            return super().train_dataloader()
        # A stream cannot be indexed by a sampler; a shuffle buffer mixes nearby rows instead.
        dataset = self._dataset(self.train_split_name).shuffle(seed=self.seed, buffer_size=10_000)
        return self._loader(self._shard_stream(dataset), self.batch_size)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.streaming and state_dict.get("train_batches_done"):
            # A stream has no index to skip to; resuming mid-epoch would need the reader's own position.
            rank_zero_warn(
                "Resuming a streamed dataset in the middle of an epoch: the epoch's stream starts again from"
                " its beginning (the model, optimizer and schedule are restored)."
            )
            return
        super().load_state_dict(state_dict)

    def _eval_loader(self, dataset, name: str) -> DataLoader:
        if self.streaming:
            return self._loader(self._shard_stream(dataset), self.eval_batch_size)
        return super()._eval_loader(dataset, name)

    # ----------------------------------------------------------------------------------------------------
    # Filling in the [MASK] tokens of a predict file.

    def prepare_data(self) -> None:
        self.check_predict_file(self.trainer.state.fn if self.trainer is not None else None)
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.check_predict_file(stage)
        super().setup(stage)

    def check_predict_file(self, stage: str | None) -> None:
        """Refuse ``predict`` without a predict file: packed splits hold no ``[MASK]`` to fill in, nor the
        example index that predictions are written by."""
        if stage == "predict" and self.predict_file is None:
            raise DataError(
                "MLM predict fills in the [MASK] tokens of the texts in data.init_args.predict_file; set it."
            )

    def predict_dataloader(self) -> DataLoader | list[DataLoader]:
        """Batches of the predict file's texts, with their ``example_index``."""
        collator = ModelInputCollator(
            self.tokenizer, self.pad_to_multiple_of, (INPUT_IDS, ATTENTION_MASK, EXAMPLE_INDEX)
        )
        return self._loader(self._dataset(PREDICT_SPLIT), self.eval_batch_size, collate_fn=collator)

    def _shard_stream(self, dataset):
        """Under DDP each rank reads its own share of a stream (Lightning cannot shard an iterable)."""
        distributed = distributed_kwargs(self.trainer)
        if not distributed:
            return dataset
        return split_dataset_by_node(
            dataset, rank=distributed["rank"], world_size=distributed["num_replicas"]
        )


def check_tokenizer_to_train(config: Any) -> None:
    """Refuse, before anything is built, a ``fit`` config whose missing tokenizer would be trained anew for a
    pretrained model: that model reads its own tokenizer's ids, and a misspelt path trained another one and
    fine-tuned on ids that mean other words, silently."""
    data = getattr(config.get("data"), "init_args", None) or {}
    model = getattr(config.get("model"), "init_args", None) or {}
    tokenizer, pretrained = data.get("tokenizer"), model.get("pretrained")
    scratch = model.get("model_config") is not None or not pretrained
    if data.get("train_tokenizer") and not scratch and asks_for_new_tokenizer(tokenizer):
        raise DataError(
            f"Tokenizer '{tokenizer}' does not exist, and model.init_args.pretrained '{pretrained}' reads its"
            " own tokenizer's ids: give that tokenizer's folder (a run's export/ has one). A new tokenizer"
            " is trained only for a model trained from scratch (model.init_args.model_config)."
        )
