"""Masked language modelling (continued pretraining or pretraining from scratch) of NeoBERT.

Tokens are masked on the fly in the module, so every epoch sees new masks; special tokens and padding
are never selected. The 30522-way ``decoder`` runs on the masked positions only (a gather of their hidden
states), which saves most of the head's compute and memory compared with the head's full forward.
Validation (and test) masks each row with a seed of its own (from its tokens), over those tokens, so
validation losses of different epochs and runs compare the same masked positions whatever the batch size,
the padding or the number of processes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from neobert_tasks.data.keys import EXAMPLE_INDEX, PREDICTION_INDEX_COLUMN
from neobert_tasks.errors import ConfigError
from neobert_tasks.model import NeoBERTForMaskedLM
from neobert_tasks.tasks.base import NeoBERTTask

IGNORE_INDEX = -100
# Seed of the validation masks (plus a checksum of the row's tokens): the same positions every epoch.
VALIDATION_MASK_SEED = 1234
# Spacing of the seeds of the evaluation sets (dataloader_idx), beyond any 32-bit checksum.
SEED_STRIDE_OF_SET = 1_000_000_007


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    special_token_ids: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    mlm_probability: float,
    mask_replace_probability: float = 1.0,
    random_replace_probability: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Select tokens for prediction and corrupt them; return ``(corrupted input_ids, labels)``.

    Each non-special, non-padding token is selected with probability ``mlm_probability``. A selected
    token becomes [MASK] with probability ``mask_replace_probability``, a uniformly random token with
    probability ``random_replace_probability``, and stays itself otherwise (BERT: 0.8 / 0.1 / 0.1;
    NeoBERT: 1.0 / 0.0). ``labels`` hold the original ids at selected positions and -100 elsewhere.
    """
    if mask_replace_probability + random_replace_probability > 1.0 + 1e-9:
        raise ConfigError("mask_replace_probability + random_replace_probability must not exceed 1.")
    device = input_ids.device
    eligible = ~torch.isin(input_ids, special_token_ids.to(device))
    if attention_mask is not None:
        eligible &= attention_mask.bool()
    draws = torch.rand(input_ids.shape, device=device, generator=generator)
    selected = eligible & (draws < mlm_probability)
    labels = input_ids.masked_fill(~selected, IGNORE_INDEX)
    # One more uniform draw decides what a selected token becomes.
    action = torch.rand(input_ids.shape, device=device, generator=generator)
    to_mask = selected & (action < mask_replace_probability)
    to_random = selected & ~to_mask & (action < mask_replace_probability + random_replace_probability)
    corrupted = input_ids.masked_fill(to_mask, mask_token_id)
    random_tokens = torch.randint(vocab_size, input_ids.shape, device=device, generator=generator)
    corrupted = torch.where(to_random, random_tokens, corrupted)
    return corrupted, labels


class MaskedLanguageModelingTask(NeoBERTTask):
    """Train ``NeoBERTForMaskedLM`` (backbone + ``decoder``) with masked language modelling.

    Logs ``train/loss`` and, per validation, ``val/loss`` (mean over masked tokens), ``val/perplexity``
    (its exponential) and ``val/accuracy`` (masked tokens predicted exactly); ``test`` logs them as ``test/``.

    The optimiser defaults follow NeoBERT's pretraining recipe (AdamW, betas (0.9, 0.95), weight decay
    0.1, cosine decay to 10% of the peak) except the peak learning rate: NeoBERT pretrained at 6e-4, which
    suits a model trained from scratch; continued pretraining of a trained checkpoint uses 1e-4 by
    default so the first steps do not undo what the model knows.

    Args:
        mlm_probability: Fraction of the (non-special, non-padding) tokens selected for prediction;
            NeoBERT uses 0.2, BERT 0.15.
        mask_replace_probability: Probability that a selected token becomes [MASK] (BERT: 0.8).
        random_replace_probability: Probability that a selected token becomes a random token (BERT: 0.1);
            the rest of the selected tokens are left unchanged.
        mask_token_id: Id of [MASK]; linked from the datamodule.
        special_token_ids: Ids never selected ([CLS], [SEP], [PAD], …); linked from the datamodule.
        vocab_size: Tokenizer vocabulary size (random replacements are drawn below it; a ``model_config``
            without ``vocab_size`` gets it); linked from the datamodule.
        learning_rate: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay, never applied to norms and biases.
        warmup_fraction: Fraction of the optimiser steps spent in linear warmup.
        lr_schedule: Decay after warmup: linear, cosine or constant.
        predict_top_k: ``predict`` writes this many most likely tokens for each ``[MASK]`` of a text.
        kwargs: The options every task shares, declared in `NeoBERTTask`.
    """

    head_class = NeoBERTForMaskedLM
    head_modules = ("decoder",)

    def __init__(
        self,
        mlm_probability: float = 0.2,
        mask_replace_probability: float = 1.0,
        random_replace_probability: float = 0.0,
        mask_token_id: int | None = None,
        special_token_ids: list[int] | None = None,
        vocab_size: int | None = None,
        learning_rate: float = 1e-4,
        weight_decay: float = 0.1,
        warmup_fraction: float = 0.01,
        lr_schedule: str = "cosine",
        predict_top_k: int = 5,
        **kwargs: Any,
    ):
        if predict_top_k < 1:
            raise ConfigError(
                f"model.init_args.predict_top_k must be a positive number, got {predict_top_k}."
            )
        if not 0.0 < mlm_probability < 1.0:
            raise ConfigError(f"model.init_args.mlm_probability must be in (0, 1), got {mlm_probability}.")
        if min(mask_replace_probability, random_replace_probability) < 0 or (
            mask_replace_probability + random_replace_probability > 1.0 + 1e-9
        ):
            raise ConfigError("mask_replace_probability and random_replace_probability must be ≥ 0, sum ≤ 1.")
        self.mlm_probability = mlm_probability
        self.mask_token_id, self.vocab_size = mask_token_id, vocab_size
        self.special_token_ids = list(special_token_ids) if special_token_ids is not None else None
        if kwargs.get("model_config") is not None and vocab_size is not None:
            # A model pretrained from scratch takes its vocabulary from the tokenizer unless told otherwise.
            kwargs["model_config"] = {"vocab_size": vocab_size, **kwargs["model_config"]}
        super().__init__(
            learning_rate=learning_rate, weight_decay=weight_decay, warmup_fraction=warmup_fraction,
            lr_schedule=lr_schedule, **kwargs,
        )  # fmt: skip
        self.val_loss, self.val_accuracy = MeanMetric(), MeanMetric()  # of validate, or of test

    def _require_tokens(self) -> tuple[torch.Tensor, int, int]:
        if self.mask_token_id is None or self.special_token_ids is None:
            raise ConfigError(
                "model.init_args.mask_token_id and model.init_args.special_token_ids are unset; they come"
                " from the datamodule (data.mask_token_id, data.special_token_ids) or must be given."
            )
        vocab_size = self.vocab_size or self.network.config.vocab_size
        return torch.tensor(self.special_token_ids), self.mask_token_id, vocab_size

    def masked_batch(self, batch: dict[str, torch.Tensor], generator=None) -> tuple[dict, torch.Tensor]:
        """The model inputs with masked ``input_ids``, and the labels (-100 where nothing is predicted)."""
        special, mask_id, vocab_size = self._require_tokens()
        hparams = self.hparams
        input_ids, labels = mask_tokens(
            batch["input_ids"], batch.get("attention_mask"), special, mask_id, vocab_size,
            self.mlm_probability, hparams.mask_replace_probability, hparams.random_replace_probability,
            generator=generator,
        )  # fmt: skip
        inputs = {key: batch[key] for key in ("attention_mask", "position_ids") if key in batch}
        return {"input_ids": input_ids, **inputs}, labels

    def masked_logits(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
        """Decoder logits ``(masked tokens, vocab)`` at the selected positions and their target ids."""
        hidden = self.network.model(**inputs, return_dict=True).last_hidden_state  # (batch, length, hidden)
        selected = labels != IGNORE_INDEX
        return self.network.decoder(hidden[selected]), labels[selected]

    def mlm_loss(self, batch: dict[str, torch.Tensor], generator=None):
        """Mean cross-entropy over the masked tokens, the logits and the targets."""
        logits, targets = self.masked_logits(*self.masked_batch(batch, generator))
        if targets.numel() == 0:  # nothing selected (tiny batch): a zero loss that keeps the graph
            return logits.sum() * 0.0, logits, targets
        return nn.functional.cross_entropy(logits.float(), targets), logits, targets

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        loss, _, _ = self.mlm_loss(batch)
        self.log_training_loss(loss, batch["input_ids"].shape[0])
        return loss

    def evaluation_masked_batch(
        self, batch: dict[str, torch.Tensor], dataloader_idx: int = 0
    ) -> tuple[dict, torch.Tensor]:
        """`masked_batch` with each row masked by a generator of its own, seeded from the row's tokens (its
        contents: packed rows have no example index), over those tokens only: a row's masks do not depend on
        the rows batched with it, the padding, the batch size or how the split is shared between ranks."""
        special, mask_id, vocab_size = self._require_tokens()
        input_ids, hparams = batch["input_ids"], self.hparams
        rows, length = input_ids.shape
        # Right padding (the collator's): a row's tokens are its first `lengths[row]` positions.
        mask = batch.get("attention_mask")
        lengths = mask.sum(1).tolist() if mask is not None else [length] * rows
        corrupted, labels = input_ids.clone(), torch.full_like(input_ids, IGNORE_INDEX)
        for row, size in enumerate(lengths):
            tokens = input_ids[row : row + 1, :size]
            key = zlib.crc32(tokens.to("cpu", torch.int64).numpy().tobytes())
            seed = VALIDATION_MASK_SEED + SEED_STRIDE_OF_SET * dataloader_idx + key
            generator = torch.Generator(device=self.device).manual_seed(seed)
            corrupted[row, :size], labels[row, :size] = mask_tokens(
                tokens, None, special, mask_id, vocab_size, self.mlm_probability,
                hparams.mask_replace_probability, hparams.random_replace_probability, generator=generator,
            )  # fmt: skip
        inputs = {key: batch[key] for key in ("attention_mask", "position_ids") if key in batch}
        return {"input_ids": corrupted, **inputs}, labels

    def evaluation_step(self, stage: str, batch, batch_index: int, dataloader_idx: int) -> None:
        logits, targets = self.masked_logits(*self.evaluation_masked_batch(batch, dataloader_idx))
        count = targets.numel()
        if count == 0:
            return
        loss = nn.functional.cross_entropy(logits.float(), targets)
        # Weighted by the masked-token count, the epoch values are exact token means over the split,
        # also across DDP ranks (torchmetrics syncs sums and weights).
        self.val_loss.update(loss.detach(), weight=count)
        self.val_accuracy.update((logits.argmax(-1) == targets).float().mean(), weight=count)

    def log_scores(self, stage: str, prefix: str) -> None:
        loss = self.val_loss.compute()
        self.log(f"{prefix}/loss", loss, prog_bar=True, add_dataloader_idx=False)
        self.log(f"{prefix}/perplexity", torch.exp(loss), add_dataloader_idx=False)
        self.log(f"{prefix}/accuracy", self.val_accuracy.compute(), add_dataloader_idx=False)
        self.val_loss.reset()
        self.val_accuracy.reset()

    # ----------------------------------------------------------------------------------------------------
    # Prediction: the most likely tokens for each [MASK] of a text (what a fill-mask pipeline returns).

    def predict_step(self, batch, batch_index, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        """Per [MASK] token: its text's ``index``, its ``position`` and the top-k ``token_ids`` with their
        probabilities (``scores``)."""
        _, mask_id, _ = self._require_tokens()
        hidden = self.network.model(
            input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask"), return_dict=True
        ).last_hidden_state  # (batch, length, hidden)
        masked = batch["input_ids"] == mask_id  # (batch, length)
        probabilities = self.network.decoder(hidden[masked]).float().softmax(dim=-1)  # (masks, vocab)
        scores, token_ids = probabilities.topk(
            min(self.hparams.predict_top_k, probabilities.shape[-1]), dim=-1
        )
        positions = torch.arange(masked.shape[1], device=masked.device).expand_as(masked)
        return {
            EXAMPLE_INDEX: batch[EXAMPLE_INDEX][:, None].expand_as(masked)[masked],
            "position": positions[masked],
            "token_ids": token_ids,
            "scores": scores,
        }

    def prediction_files(self, outputs: list[dict[str, list]], split_names: list[str], datamodule) -> dict:
        """``<split>.jsonl``: per text, in order, the text and for each [MASK] (left to right) the top-k
        tokens with their ids and probabilities."""
        files = {}
        texts = datamodule.predict_texts()
        tokenizer = datamodule.tokenizer
        for split_name, split_outputs in zip(split_names, outputs, strict=True):
            masks: dict[int, list[tuple[int, list[dict]]]] = {index: [] for index in range(len(texts))}
            for index, position, token_ids, scores in zip(
                split_outputs.get(EXAMPLE_INDEX, []), split_outputs.get("position", []),
                split_outputs.get("token_ids", []), split_outputs.get("scores", []), strict=True,
            ):  # fmt: skip
                tokens = [
                    {"token": tokenizer.decode([token_id]), "token_id": token_id, "score": score}
                    for token_id, score in zip(token_ids, scores, strict=True)
                ]
                masks[index].append((position, tokens))
            files[f"{split_name}.jsonl"] = mask_lines(texts, masks)  # line by line, never whole in memory
        return files


def mask_lines(texts: list[str], masks: dict[int, list[tuple[int, list[dict]]]]) -> Iterator[str]:
    """Per text, in order, its JSONL line: the text and each [MASK]'s predictions, left to right."""
    for index, text in enumerate(texts):
        found = [{"position": position, "predictions": tokens} for position, tokens in sorted(masks[index])]
        yield json.dumps({PREDICTION_INDEX_COLUMN: index, "text": text, "masks": found}) + "\n"
