"""How raw documents become MLM rows: packed or split into `max_length` pieces, one row per predict text, a
collator for packed rows, and a WordPiece tokenizer trained on the corpus itself.

Module-level functions, so that `datasets` can hash them to find cached `map` results.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace

from transformers import PreTrainedTokenizerFast

from neobert_tasks.data.collator import ModelInputCollator
from neobert_tasks.data.keys import ATTENTION_MASK, EXAMPLE_INDEX, INPUT_IDS, POSITION_IDS
from neobert_tasks.data.tokenizer import check_overflowing_windows

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PACKED_KEYS = ("input_ids", "attention_mask", "position_ids")


def pack_documents(batch: dict[str, list], *, tokenizer, text_column: str, max_length: int) -> dict:
    """Tokenize a batch of documents and cut their concatenation into rows of ``max_length`` tokens."""
    texts = [text for text in batch[text_column] if text and text.strip()]
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
    stream = list(itertools.chain.from_iterable(encoded))
    # Position of each token within its own document; a row boundary restarts it (see module docstring).
    positions = list(itertools.chain.from_iterable(range(len(ids)) for ids in encoded))
    rows, row_positions = [], []
    for start in range(0, len(stream), max_length):
        row_position = positions[start : start + max_length]
        offset = row_position[0]
        # A cut document continues at position 0 up to its end, then later documents keep their own.
        first_end = next((index for index, value in enumerate(row_position) if value == 0 and index), None)
        head = len(row_position) if first_end is None else first_end
        row_position = [value - offset for value in row_position[:head]] + row_position[head:]
        rows.append(stream[start : start + max_length])
        row_positions.append(row_position)
    return {
        "input_ids": rows,
        "attention_mask": [[1] * len(row) for row in rows],
        "position_ids": row_positions,
    }


def split_documents(batch: dict[str, list], *, tokenizer, text_column: str, max_length: int) -> dict:
    """One row per document, a long document split into rows of at most ``max_length`` tokens."""
    check_overflowing_windows()
    texts = [text for text in batch[text_column] if text and text.strip()]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_overflowing_tokens=True)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}


def encode_texts(
    batch: dict[str, list],
    indices: list[int] | None = None,
    *,
    tokenizer,
    max_length: int,
    column: str = "text",
    prefix: str = "",
) -> dict:
    """One row per text of ``column``, ``prefix`` put before it, truncated to ``max_length`` tokens; given
    the rows' numbers (``indices``), each row keeps its own as ``example_index``."""
    texts = [prefix + text for text in batch[column]]
    encoded = tokenizer(texts, truncation=True, max_length=max_length, return_token_type_ids=False)
    rows = {INPUT_IDS: encoded[INPUT_IDS], ATTENTION_MASK: encoded[ATTENTION_MASK]}
    return rows if indices is None else {**rows, EXAMPLE_INDEX: indices}


class PackedCollator(ModelInputCollator):
    """Pads ``input_ids`` (pad id), ``attention_mask`` (0) and ``position_ids`` (0) to the longest row, on the
    right whatever the tokenizer's side."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None, keys: Sequence[str]):
        # The pad id and side are all that `ModelInputCollator` reads of a tokenizer.
        padding = SimpleNamespace(pad_token_id=pad_token_id, padding_side="right")
        super().__init__(padding, pad_to_multiple_of, keys, {POSITION_IDS: 0})


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int, save_directory: str | Path):
    """Train a lowercasing BERT-style WordPiece tokenizer on ``texts`` and save it to ``save_directory``.

    Special tokens get ids 0–4 in the order [PAD], [UNK], [CLS], [SEP], [MASK]; single texts are wrapped
    as ``[CLS] … [SEP]`` and pairs as ``[CLS] A [SEP] B [SEP]``, as BERT's tokenizer does.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS))
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[(token, tokenizer.token_to_id(token)) for token in ("[CLS]", "[SEP]")],
    )
    roles = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")  # in SPECIAL_TOKENS' order
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, **dict(zip(roles, SPECIAL_TOKENS, strict=True))
    )
    # Save under a private name, then rename: processes started together (torchrun) may all train;
    # the first rename wins and the others load its result, so no rank reads a half-written folder.
    save_directory = Path(save_directory)
    staging = save_directory.with_name(f"{save_directory.name}.staging-{os.getpid()}")
    wrapped.save_pretrained(str(staging))
    try:
        staging.rename(save_directory)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return PreTrainedTokenizerFast.from_pretrained(str(save_directory))
    return wrapped
