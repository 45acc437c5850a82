"""Training data for contrastive sentence embeddings: (anchor, positive) pairs or (anchor, positive, negative)
triplets, from split files or a hub dataset, or made from NLI or SQuAD data (`pair_formats.py`).

Each role's text is tokenized on its own (`encode_roles`), and a batch pads each role on its own, under
sentence-transformers' key names (`keys.PAIR_BATCH_KEYS`): `anchor_input_ids`, `anchor_attention_mask`,
`positive_...` and, for triplets, `negative_...`. Each row also keeps a hash of each role's token ids
(`TEXT_HASHES`), so that training batches never hold a text twice, in any role, across all ranks of a step
(`UniqueTextBatchSampler`; `pair_training_loader` builds its loader as `training_loader` does the others').
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Literal

import datasets
import lightning as L
import numpy as np
import pyarrow.compute as pc
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader

from neobert_tasks.data.base import EncodeFunction, TokenizedDataModule
from neobert_tasks.data.checks import check_text_columns, require_columns
from neobert_tasks.data.collator import ModelInputCollator
from neobert_tasks.data.embedding_evaluation import EvaluationSetLoaders
from neobert_tasks.data.hub_or_local import HubOrLocalSource
from neobert_tasks.data.keys import (
    ANCHOR,
    ATTENTION_MASK,
    EXAMPLE_INDEX,
    INPUT_IDS,
    NEGATIVE,
    PAIR_BATCH_KEYS,
    POSITIVE,
    ROLES,
    TEXT_HASHES,
    role_key,
)
from neobert_tasks.data.loaders import (
    Collator,
    MaxTokens,
    batch_sampler_loader,
    distributed_kwargs,
    resolved_max_tokens,
)
from neobert_tasks.data.pair_formats import FORMAT_COLUMNS, encode_roles, nli_triplet_split, squad_pair_split
from neobert_tasks.data.predict_text import load_text_file
from neobert_tasks.data.sources import DataError
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.data.text_encoding import encode_texts
from neobert_tasks.data.unique_batches import UniqueTextBatchSampler, row_costs


def pair_training_loader(
    dataset: datasets.Dataset, texts: np.ndarray, role_lengths: np.ndarray, collate_fn: Collator,
    trainer: L.Trainer | None, resume_at: tuple[int, int] | None, *, batch_size: int, max_tokens: MaxTokens,
    group_by_length: bool, seed: int, pad_to_multiple_of: int, num_workers: int,
) -> DataLoader:  # fmt: skip
    """This rank's training batches without a repeated text (`UniqueTextBatchSampler`), positioned after
    `resume_at` (epoch, batches done) when resuming; `max_tokens` auto is `batch_size` × the mean row cost."""
    budget = None
    if max_tokens is not None:
        costs = row_costs(role_lengths, pad_to_multiple_of)
        budget = resolved_max_tokens(max_tokens, costs, batch_size, pad_to_multiple_of)
        if (too_long := int((costs > budget).sum())) > 0:
            rank_zero_warn(
                f"{too_long} training rows have more tokens than data.init_args.max_tokens ({budget}) once"
                " each role is padded to their longest text; each gets a batch of its own on its rank."
            )
    distributed = distributed_kwargs(trainer) or {"num_replicas": 1, "rank": 0}
    sampler = UniqueTextBatchSampler(
        texts, role_lengths, batch_size, seed, group_by_length, budget, pad_to_multiple_of, **distributed
    )
    return batch_sampler_loader(dataset, sampler, collate_fn, trainer, num_workers, resume_at)


def is_text_feature(feature: object) -> bool:
    """Whether a column holds texts or lists of texts (several hard negatives per row)."""
    inner = getattr(feature, "feature", feature)  # a List's items
    return getattr(inner, "dtype", None) in ("string", "large_string")


class PairDataModule(EvaluationSetLoaders, HubOrLocalSource, TokenizedDataModule):
    """Pairs or triplets for contrastive sentence embeddings, batched without a repeated text; evaluation sets
    (STS, retrieval) to score the embeddings on; texts to embed with ``predict``.

    Validation runs one loader per evaluation set of `eval_sets` (`embedding_evaluation.py`), then one over
    the pair split `validation_split` when the data has it (its contrastive loss is logged); test likewise
    with `test_sets` and `test_split`.

    Args:
        dataset: hub dataset id loaded with `datasets.load_dataset`; give this or `data_dir`.
        dataset_config: configuration (subset) name of the hub dataset, if it has several.
        data_dir: local directory with `<split>.parquet|csv|tsv|json|jsonl` files; give this or `dataset`.
        anchor_column: column of the anchors (queries).
        positive_column: column of the positives (the texts that match their anchor).
        negative_column: column of the hard negatives; None for pairs. The default 'negative' may be absent
            (pairs); a column named otherwise must exist.
        nli_to_triplets: make triplets from NLI columns premise, hypothesis and label (ClassLabel with
            entailment and contradiction, ids 0/1/2 as entailment/neutral/contradiction, or names).
        squad_pairs: make (question, paragraph) pairs from SQuAD columns question and context.
        query_prefix: text put before every anchor and retrieval query (an instruction, e.g. "query: ").
        document_prefix: text put before every positive, negative and retrieval document (e.g. "passage: ").
        train_split: name of the training split.
        validation_split: name of the validation split of pairs; None for none.
        test_split: name of the test split of pairs; None for none.
        eval_sets: evaluation sets scored at validation, by path: an STS file (sentence1, sentence2, score or
            label), a SQuAD file (question → paragraph retrieval) or a BEIR directory (corpus, queries,
            qrels); the first set's main metric is what `monitor: auto` watches.
        test_sets: evaluation sets scored by ``test``; None scores `eval_sets`.
        retrieval_split: qrels split that BEIR evaluation sets are scored on (``qrels/<split>`` or
            ``qrels_<split>``).
        predict_file: texts to embed with ``predict``: a .txt file (one text per line) or a .csv, .tsv,
            .jsonl or .parquet table.
        predict_column: column of `predict_file` holding the texts (a one-column table may name it anyhow).
        predict_prefix: prefix of the predicted texts: document (`document_prefix`) or query (`query_prefix`).
        kwargs: the options every datamodule shares, declared in `TokenizedDataModule`.
    """

    # A pair batch's keys, and a predicted batch's (one text per row, with its index).
    model_input_keys = (*PAIR_BATCH_KEYS, INPUT_IDS, ATTENTION_MASK, EXAMPLE_INDEX)
    batches_take_every_row = False  # a row whose texts every batch already holds waits for the next epoch

    def __init__(
        self,
        dataset: str | None = None,
        dataset_config: str | None = None,
        data_dir: str | None = None,
        anchor_column: str = ANCHOR,
        positive_column: str = POSITIVE,
        negative_column: str | None = NEGATIVE,
        nli_to_triplets: bool = False,
        squad_pairs: bool = False,
        query_prefix: str = "",
        document_prefix: str = "",
        train_split: str = "train",
        validation_split: str | None = "validation",
        test_split: str | None = "test",
        eval_sets: list[str] | None = None,
        test_sets: list[str] | None = None,
        retrieval_split: str = "test",
        predict_file: str | None = None,
        predict_column: str = "text",
        predict_prefix: Literal["document", "query"] = "document",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.set_data_source(dataset, dataset_config, data_dir, exclusive=True)
        self.columns = {ANCHOR: anchor_column, POSITIVE: positive_column, NEGATIVE: negative_column}
        if nli_to_triplets or squad_pairs:
            self._check_format_options(nli_to_triplets, squad_pairs)
            # The rows made from NLI or SQuAD carry the role names.
            self.columns = {ANCHOR: ANCHOR, POSITIVE: POSITIVE, NEGATIVE: None if squad_pairs else NEGATIVE}
        # A negative column must exist unless it is the default name, which reads pairs as well as triplets.
        self.negative_required = negative_column not in (None, NEGATIVE) or nli_to_triplets
        self.nli_to_triplets, self.squad_pairs = nli_to_triplets, squad_pairs
        self.query_prefix, self.document_prefix = query_prefix, document_prefix
        self.train_split_name = train_split
        self.validation_split, self.test_split = validation_split, test_split
        self.eval_sets, self.test_sets = list(eval_sets or []), test_sets
        self.retrieval_split = retrieval_split
        self.predict_file, self.predict_column = predict_file, predict_column
        self.predict_prefix = query_prefix if predict_prefix == "query" else document_prefix
        self.save_hyperparameters()

    def _check_format_options(self, nli_to_triplets: bool, squad_pairs: bool) -> None:
        """Refuse two formats at once, and column options, which a format with columns of its own ignores."""
        if nli_to_triplets and squad_pairs:
            raise DataError("Set one of nli_to_triplets and squad_pairs, not both.")
        option = "nli_to_triplets" if nli_to_triplets else "squad_pairs"
        for role, column in self.columns.items():
            if column != role:
                raise DataError(
                    f"{role}_column ({column!r}) does not apply with {option}, which reads the columns"
                    f" {', '.join(FORMAT_COLUMNS[option])}."
                )

    # ----------------------------------------------------------------------------------------------------
    # Splits and their columns.

    def load_raw_splits(self, split_names: Sequence[str]) -> tuple[datasets.DatasetDict, dict[str, str]]:
        """The splits as loaded, or made into triplets or pairs by `nli_to_triplets` or `squad_pairs`."""
        raw, origins = super().load_raw_splits(split_names)
        if self.nli_to_triplets:
            raw = datasets.DatasetDict({n: nli_triplet_split(d, n, origins[n]) for n, d in raw.items()})
        elif self.squad_pairs:
            raw = datasets.DatasetDict({n: squad_pair_split(d, origins[n]) for n, d in raw.items()})
        return raw, origins

    def load_predict_file(self) -> datasets.Dataset:
        return load_text_file(self.predict_file, self.cache_dir, (self.predict_column,))

    def role_columns(self, dataset: datasets.Dataset) -> dict[str, str]:
        """Role -> column of the roles a split has: anchor and positive, and negative where it has one."""
        negative = self.columns[NEGATIVE]
        present = negative is not None and (negative in dataset.column_names or self.negative_required)
        return {
            role: column for role, column in self.columns.items() if column and (role != NEGATIVE or present)
        }

    def empty_text_columns(self) -> Sequence[str]:
        # A column a split lacks is passed over, so the predict file's column can be listed beside the roles.
        return [column for column in (*self.columns.values(), self.predict_column) if column is not None]

    def check_split(self, split_name: str, dataset: datasets.Dataset, origin: str) -> None:
        if split_name == PREDICT_SPLIT:
            return  # checked as it was read (`load_text_file`)
        columns = list(self.role_columns(dataset).values())
        require_columns(dataset, columns, origin)
        check_text_columns(dataset, columns, origin)
        if self.columns[NEGATIVE] is not None and self.columns[NEGATIVE] not in columns:
            unused = [
                name for name, feature in dataset.features.items()
                if name not in columns and is_text_feature(feature)
                and not name.lower().endswith(("id", "idx"))  # row ids are text too, and no negatives
            ]  # fmt: skip
            if unused:  # triplets whose negative column has another name would train as pairs, silently
                rank_zero_warn(
                    f"{origin} has no column '{self.columns[NEGATIVE]}', so it trains on (anchor, positive)"
                    f" pairs; its text column(s) {', '.join(map(repr, unused))} are not used: to train on"
                    " hard negatives, name their column with data.init_args.negative_column."
                )

    def encode_function(self, split_name: str, dataset: datasets.Dataset) -> EncodeFunction:
        if split_name == PREDICT_SPLIT:  # one text per row, under the plain model-input keys
            return functools.partial(
                encode_texts, tokenizer=self.tokenizer, column=self.predict_column,
                prefix=self.predict_prefix, max_length=self.max_length,
            )  # fmt: skip
        prefixes = {ANCHOR: self.query_prefix, POSITIVE: self.document_prefix, NEGATIVE: self.document_prefix}
        roles = tuple((role, column, prefixes[role]) for role, column in self.role_columns(dataset).items())
        return functools.partial(
            encode_roles, tokenizer=self.tokenizer, roles=roles, max_length=self.max_length
        )

    def make_collator(self) -> ModelInputCollator:
        """Pads each role's token ids (pad id) and mask (0) to that role's longest text in the batch."""
        padding = {INPUT_IDS: self.tokenizer.pad_token_id, ATTENTION_MASK: 0}
        pad_values = {role_key(role, key): value for role in ROLES for key, value in padding.items()}
        return ModelInputCollator(self.tokenizer, self.pad_to_multiple_of, self.model_input_keys, pad_values)

    # ----------------------------------------------------------------------------------------------------
    # Lengths, hashes and training batches.

    def role_lengths(self, name: str) -> np.ndarray:
        """(rows, roles) token counts of a tokenized split, read from Arrow without decoding rows."""
        table = self._dataset(name).with_format("arrow")
        keys = [key for key in (role_key(role, INPUT_IDS) for role in ROLES) if key in table.column_names]
        return np.stack([pc.list_value_length(table[key]).to_numpy() for key in keys], axis=1)

    def sequence_lengths(self, name: str) -> list[int]:
        """Per row, its longest text's token count: what length-grouped batches sort by. Each role is padded
        on its own, so the longest text bounds every role's padding (a row's sum would not)."""
        return self.role_lengths(name).max(axis=1).tolist()

    def token_budget_lengths(self, name: str) -> list[int]:
        """Per row, roles × its longest padded text: a bound on the padded tokens it adds to a batch."""
        return row_costs(self.role_lengths(name), self.pad_to_multiple_of).tolist()

    def text_hashes(self, name: str) -> np.ndarray:
        """(rows, roles) hashes of each role's text of a tokenized split."""
        column = self._dataset(name).with_format("arrow")[TEXT_HASHES]
        return pc.list_flatten(column).to_numpy().reshape(len(column), -1)

    def train_dataloader(self) -> DataLoader:
        """Training batches without a repeated text over the ranks of a step (`UniqueTextBatchSampler`):
        length-grouped or shuffled, or sized by `max_tokens`, and resumable mid-epoch."""
        name = self.train_split_name
        return pair_training_loader(
            self._dataset(name), self.text_hashes(name), self.role_lengths(name), self.collator, self.trainer,
            **self.training_options(),
        )  # fmt: skip
