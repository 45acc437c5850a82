"""Sentence embeddings: a shared-encoder bi-encoder trained with a contrastive loss.

Training batches come from `PairDataModule`: per role (anchor, positive and optionally a hard negative),
``<role>_input_ids`` and ``<role>_attention_mask``. Every text goes through the same backbone, is pooled
(mean of its tokens or [CLS]) and L2-normalised; the loss is InfoNCE over in-batch and hard negatives
(`contrastive_loss.py`), gathered across devices, optionally over Matryoshka prefixes, and optionally
computed with gradient caching (`grad_cache.py`) for batches larger than memory allows.

Validation encodes the texts of each evaluation set (STS pairs, a retrieval collection) and scores the
embeddings, logging ``val/<set>/<metric>`` (``val/stsb/spearman``, ``val/scifact/ndcg@10``); `predict`
writes one embedding per text. The export is a sentence-transformers model with the same pooling and
normalisation, so ``SentenceTransformer(export).encode`` gives the embeddings this module computes.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_warn

from neobert_tasks.data.keys import (
    ANCHOR,
    ATTENTION_MASK,
    EXAMPLE_INDEX,
    INPUT_IDS,
    NEGATIVE,
    POSITIVE,
    PREDICTION_INDEX_COLUMN,
    ROLES,
    role_key,
)
from neobert_tasks.errors import ConfigError
from neobert_tasks.model import NeoBERTModel
from neobert_tasks.model.pooling import POOLING_MODES, pool_hidden_states
from neobert_tasks.tasks.base import NeoBERTTask
from neobert_tasks.tasks.contrastive_loss import contrastive_loss, world
from neobert_tasks.tasks.grad_cache import cached_embeddings

EMBEDDING_FORMATS = ("npy", "parquet")


def role_inputs(batch: dict[str, torch.Tensor], role: str) -> dict[str, torch.Tensor] | None:
    """The model inputs of one role's texts (``anchor_input_ids`` → ``input_ids``, …); None when absent."""
    if role_key(role, INPUT_IDS) not in batch:
        return None
    return {key: batch[role_key(role, key)] for key in (INPUT_IDS, ATTENTION_MASK)}


class EmbeddingTask(NeoBERTTask):
    """Train NeoBERT as a sentence-embedding model (contrastive, in-batch and hard negatives).

    Args:
        pooling: How token states become one vector: ``mean`` (of the real tokens) or ``cls``.
        temperature: Divides the cosine similarities in the loss; NeoBERT's recipe uses 0.07.
        symmetric_loss: Average the anchor → positive loss with the positive → anchor one.
        matryoshka_dims: Embedding prefixes to train, e.g. [64, 128, 256, 768]: the loss is summed over
            them (the full width included only if listed). None trains the full embedding only.
        grad_cache_chunk_size: Encode a role's texts this many at a time with gradient caching, so that a
            contrastive batch of any size needs the memory of one chunk; None encodes the batch at once.
        gather_across_devices: Under distributed training, score each anchor against the candidates of
            every device (more negatives); false keeps each device's batch on its own.
        embedding_format: What ``predict`` writes: ``npy`` (one float32 matrix, rows in input order) or
            ``parquet`` (index, text and embedding per row).
        kwargs: The options every task shares, declared in `NeoBERTTask`.
    """

    head_class = NeoBERTModel

    def __init__(
        self,
        pooling: str = "mean",
        temperature: float = 0.07,
        symmetric_loss: bool = False,
        matryoshka_dims: list[int] | None = None,
        grad_cache_chunk_size: int | None = None,
        gather_across_devices: bool = True,
        embedding_format: str = "npy",
        **kwargs: Any,
    ):
        check_embedding_options(
            pooling, temperature, matryoshka_dims, grad_cache_chunk_size, embedding_format
        )
        self.pooling = pooling
        super().__init__(**kwargs)
        width = self.model.config.hidden_size
        if matryoshka_dims and max(matryoshka_dims) > width:
            raise ConfigError(
                f"model.init_args.matryoshka_dims {matryoshka_dims} holds a size above the model's width"
                f" ({width})."
            )
        self._collected: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    # The pooling and normalisation that an export's sentence-transformers modules repeat.
    @property
    def sentence_embedding(self) -> dict[str, Any]:
        return {"pooling": self.pooling, "normalize": True}

    def embed(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """L2-normalised sentence embeddings ``(rows, hidden)`` of tokenized texts."""
        mask = inputs.get(ATTENTION_MASK)
        hidden = self.model(
            input_ids=inputs[INPUT_IDS], attention_mask=mask, first_token_only=self.pooling == "cls"
        ).last_hidden_state
        return F.normalize(pool_hidden_states(hidden, mask, self.pooling), dim=-1)

    def encode_role(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """`embed`, with gradient caching when the batch is larger than ``grad_cache_chunk_size``."""
        chunk_size = self.hparams.grad_cache_chunk_size
        if chunk_size is None or inputs[INPUT_IDS].shape[0] <= chunk_size or not torch.is_grad_enabled():
            return self.embed(inputs)
        trained = [parameter for parameter in self.parameters() if parameter.requires_grad]
        return cached_embeddings(self.embed, inputs, chunk_size, trained)

    def pair_loss(self, batch: dict[str, torch.Tensor], gather: bool) -> tuple[torch.Tensor, int]:
        """The contrastive loss of a batch of pairs or triplets, and its number of rows."""
        inputs = {role: role_inputs(batch, role) for role in ROLES}
        embeddings = {role: self.encode_role(value) for role, value in inputs.items() if value is not None}
        loss = contrastive_loss(
            embeddings[ANCHOR],
            embeddings[POSITIVE],
            embeddings.get(NEGATIVE),
            matryoshka_dims=self.hparams.matryoshka_dims,
            temperature=self.hparams.temperature,
            symmetric=self.hparams.symmetric_loss,
            gather=gather,
        )
        return loss, embeddings[ANCHOR].shape[0]

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        loss, rows = self.pair_loss(batch, gather=self.hparams.gather_across_devices)
        self.log_training_loss(loss, rows)
        return loss

    # ----------------------------------------------------------------------------------------------------
    # Evaluation: every text of each evaluation set is embedded, then the set scores the embeddings; a pair
    # split (anchor/positive keys) gets its contrastive loss, each batch's own rows as negatives.

    def evaluation_step(self, stage: str, batch, batch_index: int, dataloader_idx: int) -> None:
        rows = self._collected.setdefault(dataloader_idx, [])
        if role_key(ANCHOR, INPUT_IDS) in batch:
            loss, count = self.pair_loss(batch, gather=False)
            rows.append((torch.tensor(count), loss.detach().float().cpu() * count))
        else:
            rows.append((batch[EXAMPLE_INDEX].cpu(), self.embed(batch).float().cpu()))

    # Metric name prefixes (``val/squad_dev/``) of the evaluation sets the last validation left unscored.
    unscored_prefixes: tuple[str, ...] = ()

    def log_scores(self, stage: str, prefix: str) -> None:
        collected, self._collected = self._collected, {}
        unscored = []
        datamodule = self._trainer.datamodule
        # The datamodule's evaluation sets of ``stage`` (the first dataloaders, in order).
        sets = datamodule.evaluation_sets_for(stage) if hasattr(datamodule, "evaluation_sets_for") else []
        for position, name in enumerate(datamodule.split_names_for(stage)):
            if position not in collected:
                continue  # a sanity check that stopped before this loader
            if position >= len(sets):
                self.log_pair_loss(f"{prefix}/{name}/loss", collected[position], on_bar=position == 0)
                continue
            evaluation_set = sets[position]
            embeddings = gathered_in_order(collected[position], len(evaluation_set.texts))
            if embeddings is None:  # a partial pass: no score to report
                unscored.append(f"{prefix}/{name}/")
                if not self._trainer.sanity_checking:
                    rank_zero_warn(
                        f"{evaluation_set.name} is not scored: trainer.limit_{prefix}_batches stopped before"
                        f" its {len(evaluation_set.texts)} texts were embedded."
                    )
                continue
            scores = evaluation_set.score(embeddings)
            scores.update({f"bm25/{key}": value for key, value in lexical_baseline(evaluation_set).items()})
            for key, value in scores.items():
                on_bar = position == 0 and key == evaluation_set.main_metric
                # The same numbers on every rank (gathered), so no sync is needed.
                self.log(f"{prefix}/{name}/{key}", float(value), prog_bar=on_bar)
        self.unscored_prefixes = tuple(unscored)

    def log_pair_loss(self, name: str, parts: list[tuple[torch.Tensor, torch.Tensor]], on_bar: bool) -> None:
        """The mean loss per row over the batches of every rank."""
        totals = torch.stack([torch.stack([count.float(), loss_sum]) for count, loss_sum in parts]).sum(0)
        if world()[1] > 1:
            totals = totals.to(self.device)
            dist.all_reduce(totals)
        self.log(name, float(totals[1] / totals[0]), prog_bar=on_bar)

    # ----------------------------------------------------------------------------------------------------
    # Prediction: one embedding per input text.

    # Rows stay NumPy arrays in the prediction writer: as Python floats a 768-wide row takes 25 KB, not 3.
    prediction_array_keys = ("embedding",)

    def predict_step(self, batch, batch_index, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        return {EXAMPLE_INDEX: batch[EXAMPLE_INDEX], "embedding": self.embed(batch).float().cpu()}

    def prediction_files(self, outputs: list[dict[str, list]], split_names: list[str], datamodule) -> dict:
        """Per predicted split, ``<split>.npy`` (float32 ``(texts, hidden)``, rows in input order) or
        ``<split>.parquet`` (``index``, the text where known, and ``embedding``)."""
        files = {}
        for split_name, split_outputs in zip(split_names, outputs, strict=True):
            indices = split_outputs[EXAMPLE_INDEX]
            order = sorted(range(len(indices)), key=indices.__getitem__)
            matrix = np.asarray([split_outputs["embedding"][row] for row in order], dtype=np.float32)
            buffer = io.BytesIO()
            if self.hparams.embedding_format == "npy":
                np.save(buffer, matrix)
            else:
                table = {PREDICTION_INDEX_COLUMN: [indices[row] for row in order]}
                texts = datamodule.predict_texts(split_name) if hasattr(datamodule, "predict_texts") else {}
                if texts:
                    table["text"] = [texts[index] for index in table[PREDICTION_INDEX_COLUMN]]
                table["embedding"] = list(matrix)
                import pandas as pd  # noqa: PLC0415 - only for this output format

                pd.DataFrame(table).to_parquet(buffer, index=False)
            files[f"{split_name}.{self.hparams.embedding_format}"] = buffer.getvalue()
        return files


def lexical_baseline(evaluation_set) -> dict[str, float]:
    """BM25's scores on a retrieval set, for scale (cached by the set); none for STS or without bm25s."""
    if not hasattr(evaluation_set, "bm25_scores"):
        return {}
    try:
        return evaluation_set.bm25_scores()
    except ImportError as error:  # the embeddings extra is not installed: score without the baseline
        rank_zero_warn(f"{error} {evaluation_set.name} is scored without it.")
        return {}


def gathered_in_order(parts: list[tuple[torch.Tensor, torch.Tensor]], total: int) -> torch.Tensor | None:
    """The embeddings of one evaluation set from every rank, row ``i`` being text ``i``; None unless every
    one of the ``total`` texts was embedded."""
    _, ranks = world()
    if ranks > 1:  # ranks hold different numbers of texts: objects, not a same-shape tensor all-gather
        everything: list = [None] * ranks
        dist.all_gather_object(everything, parts)
        parts = [part for rank_parts in everything for part in rank_parts]
    indices = torch.cat([index for index, _ in parts])
    embeddings = torch.cat([embedding for _, embedding in parts])
    if indices.numel() != total or torch.unique(indices).numel() != total:
        return None
    ordered = torch.empty_like(embeddings)
    ordered[indices] = embeddings
    return ordered


def check_embedding_options(
    pooling: str,
    temperature: float,
    matryoshka_dims: list[int] | None,
    grad_cache_chunk_size: int | None,
    embedding_format: str,
) -> None:
    """One sentence naming the option, for each value `EmbeddingTask` cannot use."""
    if pooling not in POOLING_MODES:
        raise ConfigError(f"model.init_args.pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}.")
    if not temperature > 0:
        raise ConfigError(f"model.init_args.temperature must be positive; it is {temperature}.")
    if matryoshka_dims is not None and (not matryoshka_dims or min(matryoshka_dims) < 1):
        raise ConfigError(
            f"model.init_args.matryoshka_dims must list positive sizes; it is {matryoshka_dims}."
        )
    if grad_cache_chunk_size is not None and grad_cache_chunk_size < 1:
        raise ConfigError(
            f"model.init_args.grad_cache_chunk_size must be positive or null; it is {grad_cache_chunk_size}."
        )
    if embedding_format not in EMBEDDING_FORMATS:
        raise ConfigError(
            f"model.init_args.embedding_format {embedding_format!r} is not one of"
            f" {', '.join(EMBEDDING_FORMATS)}."
        )
