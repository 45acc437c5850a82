"""Token classification (NER, tagging) scored at the entity level, as the NER literature reports it.

Long sentences or documents arrive as several overlapping windows; the datamodule marks, per word,
the one token that scores it (``word_ids`` ≥ 0, in the window where the word has the most context).
The metric receives (example, word, predicted tag, gold tag) per word and rebuilds whole sequences
itself, so windows of one document may sit in different batches or on different DDP ranks.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric

from neobert_tasks.data.keys import EXAMPLE_INDEX, PREDICTION_INDEX_COLUMN
from neobert_tasks.errors import ConfigError
from neobert_tasks.metrics.entities import MODES, EntityF1, extract_entities
from neobert_tasks.model import NeoBERTForTokenClassification
from neobert_tasks.tasks.base import NeoBERTTask
from neobert_tasks.tasks.class_weights import (
    check_loss_options,
    log_weights,
    resolve_weights,
    training_label_counts,
    weighted_loss,
)


class TokenClassificationTask(NeoBERTTask):
    """Fine-tune ``NeoBERTForTokenClassification`` (per-token ``classifier``) for NER.

    Logs ``val/precision``, ``val/recall``, ``val/f1`` and ``val/f1_<TYPE>`` in ``metric_mode``, and the
    same scores of the other mode under ``val/<mode>_f1`` etc.

    Args:
        num_labels: Number of tags; linked from the datamodule.
        label_names: Tag names in id order (``O``, ``B-PER``, …), saved as ``config.id2label``; linked
            from the datamodule.
        metric_mode: Entity chunking of the main scores: ``conlleval`` (lenient, as conlleval and
            seqeval's default) or ``strict`` (well-formed IOB2 entities only).
        classifier_dropout: Dropout before the per-token classifier.
        class_weights: Weight of each tag in the training loss, in id order, or ``balanced`` (from the
            training tags' frequencies, per labelled token); None weighs every tag 1.
        label_smoothing: Probability mass spread over the other tags in the training loss.
        learning_rate: Peak learning rate of AdamW.
        kwargs: The options every task shares, declared in `NeoBERTTask`.
    """

    head_class = NeoBERTForTokenClassification
    head_modules = ("classifier",)

    def __init__(
        self,
        num_labels: int | None = None,
        label_names: list[str] | None = None,
        metric_mode: str = "conlleval",
        classifier_dropout: float = 0.1,
        class_weights: list[float] | str | None = None,
        label_smoothing: float = 0.0,
        learning_rate: float = 5e-5,
        **kwargs: Any,
    ):
        if not label_names or (num_labels is not None and num_labels != len(label_names)):
            raise ConfigError(
                f"model.init_args.label_names ({label_names}) must list the {num_labels} tag names; they come"
                " from the datamodule (data.init_args.label_names)."
            )
        check_loss_options("token_classification", class_weights, label_smoothing)
        if metric_mode not in MODES:
            raise ConfigError(
                f"model.init_args.metric_mode {metric_mode!r} is not one of {', '.join(MODES)}."
            )
        self.label_names, self.num_labels = list(label_names), len(label_names)
        self.metric_mode, self.classifier_dropout = metric_mode, classifier_dropout
        super().__init__(learning_rate=learning_rate, **kwargs)
        check_tag_names(self.label_names, metric_mode)
        # Strict IOB2 scoring knows no S-/E- tags: IOBES data is scored in conlleval mode only.
        iob2 = all(name[0] in "OBI" for name in self.label_names)
        modes = [mode for mode in MODES if mode != "strict" or iob2]
        self.metrics = nn.ModuleDict({mode: EntityF1(self.label_names, mode=mode) for mode in modes})
        self.loss = MeanMetric()

    def head_config(self) -> dict[str, Any]:
        return {
            "num_labels": self.num_labels,
            "classifier_dropout": self.classifier_dropout,
            "id2label": dict(enumerate(self.label_names)),
            "label2id": {name: index for index, name in enumerate(self.label_names)},
        }

    class_weights: torch.Tensor | None = None  # set for fit by `setup` when asked for

    def setup(self, stage: str) -> None:
        super().setup(stage)
        option = self.hparams.class_weights
        if stage == "fit" and option is not None:
            datamodule = getattr(self._trainer, "datamodule", None)
            counts = training_label_counts(datamodule, self.num_labels, multi_label=False)
            key = "model.init_args.class_weights"
            self.class_weights = resolve_weights(option, key, self.num_labels, self.label_names, counts)
            log_weights({"class_weights": self.class_weights}, self.label_names)

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        if self.class_weights is None and not self.hparams.label_smoothing:
            return super().training_step(batch, batch_index)
        inputs = {key: value for key, value in self.model_inputs(batch).items() if key != "labels"}
        logits = self.model(**inputs).logits  # (batch, length, tags); labels -100 where no tag is scored
        weights = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = weighted_loss(
            logits, batch["labels"], "single_label_classification", weights, self.hparams.label_smoothing
        )
        self.log_training_loss(loss, batch["input_ids"].shape[0])
        return loss

    def _scored_words(self, batch: dict[str, torch.Tensor], logits: torch.Tensor):
        """Per scored word: example index, word index, predicted tag, its probability, gold tag."""
        scored = batch["word_ids"] >= 0  # (batch, length)
        probabilities, predictions = logits.float().softmax(-1).max(-1)  # (batch, length) each
        examples = batch[EXAMPLE_INDEX][:, None].expand_as(scored)
        gold = batch["labels"][scored] if "labels" in batch else None
        return examples[scored], batch["word_ids"][scored], predictions[scored], probabilities[scored], gold

    def evaluation_step(self, stage: str, batch, batch_index: int, dataloader_idx: int) -> None:
        outputs = self.model(**self.model_inputs(batch))
        # The loss is a mean over labelled tokens; weighting by their count keeps the epoch value exact
        # across batches and DDP ranks (torchmetrics syncs it), unlike self.log's per-batch mean.
        self.loss.update(outputs.loss.detach(), weight=(batch["labels"] != -100).sum())
        examples, words, predictions, _, gold = self._scored_words(batch, outputs.logits)
        for metric in self.metrics.values():
            metric.update(examples, words, predictions, gold)

    def log_scores(self, stage: str, prefix: str) -> None:
        self.log(f"{prefix}/loss", self.loss.compute(), add_dataloader_idx=False)
        self.loss.reset()
        for mode, metric in self.metrics.items():
            name_prefix = f"{prefix}/" if mode == self.metric_mode else f"{prefix}/{mode}_"
            for name, value in metric.compute().items():
                on_bar = mode == self.metric_mode and name == "f1"
                self.log(f"{name_prefix}{name}", value, prog_bar=on_bar, add_dataloader_idx=False)
            metric.reset()

    def predict_step(self, batch, batch_index, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        inputs = {key: value for key, value in self.model_inputs(batch).items() if key != "labels"}
        logits = self.model(**inputs).logits
        examples, words, predictions, probabilities, _ = self._scored_words(batch, logits)
        return {"example": examples, "word": words, "prediction": predictions, "score": probabilities}

    def prediction_files(self, outputs: list[dict[str, list]], split_names: list[str], datamodule) -> dict:
        """Per predicted split, ``<split>.jsonl`` (per input, the entities with type, text, character span
        and score) and ``<split>.conll`` (a word per line with its predicted tag, after its gold tag where
        the split has tags; a blank line after each input): what conlleval and seqeval score."""
        files = {}
        for split_name, split_outputs in zip(split_names, outputs, strict=True):
            examples = datamodule.predict_examples(split_name)
            words_by_example: dict[int, dict[int, tuple[int, float]]] = {}
            for example, word, prediction, score in zip(
                split_outputs["example"], split_outputs["word"], split_outputs["prediction"],
                split_outputs["score"], strict=True,
            ):  # fmt: skip
                words_by_example.setdefault(example, {}).setdefault(word, (prediction, score))
            # An input none of whose words was predicted (trainer.limit_predict_batches) is left out, not
            # written as all "O", which reads as a prediction.
            examples = {i: ex for i, ex in examples.items() if i in words_by_example or not ex["words"]}
            # Both files are made input by input as they are written, never whole in memory.
            files[f"{split_name}.jsonl"] = entity_lines(
                examples, words_by_example, self.label_names, self.metric_mode
            )
            gold = datamodule.gold_tags(split_name) if hasattr(datamodule, "gold_tags") else None
            files[f"{split_name}.conll"] = conll_columns(examples, words_by_example, self.label_names, gold)
        return files


def entity_lines(
    examples: dict[int, dict], words_by_example: dict, label_names: list[str], mode: str
) -> Iterator[str]:
    """The JSONL lines of `entities_record`, input by input (a generator: its arguments are bound now)."""
    for index in sorted(examples):
        yield (
            entities_record(index, examples[index], words_by_example.get(index, {}), label_names, mode) + "\n"
        )


def predicted_tags(word_count: int, word_predictions: dict, label_names: list[str]) -> list[str]:
    """The predicted tag of each word; "O" for a word no window scored (cut by max_length)."""
    return [label_names[word_predictions[w][0]] if w in word_predictions else "O" for w in range(word_count)]


def conll_columns(
    examples: dict[int, dict], words_by_example: dict, label_names: list[str], gold: dict | None
) -> Iterator[str]:
    """CoNLL column text, input by input: ``word [gold] predicted`` per line, space-separated (spaces inside
    a word become ``_``), a blank line between inputs."""
    for position, index in enumerate(sorted(examples)):
        words = examples[index]["words"]
        tags = predicted_tags(len(words), words_by_example.get(index, {}), label_names)
        # Columns are split on spaces: a word with spaces inside (possible in JSON data) keeps one column.
        words = [re.sub(r"\s+", "_", word) for word in words]
        columns = [words, gold[index], tags] if gold is not None else [words, tags]
        yield ("\n" if position else "") + "".join(" ".join(row) + "\n" for row in zip(*columns, strict=True))


def entities_record(
    index: int, example: dict, word_predictions: dict, label_names: list[str], mode: str
) -> str:
    """One JSON line: the example's text and its predicted entities with character offsets."""
    offsets = example["word_offsets"]
    tags = predicted_tags(len(offsets), word_predictions, label_names)
    entities = []
    for entity_type, start_word, end_word in sorted(extract_entities(tags, mode), key=lambda item: item[1]):
        start, end = offsets[start_word][0], offsets[end_word - 1][1]
        scores = [
            word_predictions[word][1] for word in range(start_word, end_word) if word in word_predictions
        ]
        entities.append(
            {
                "type": entity_type,
                "text": example["text"][start:end],
                "start": start,
                "end": end,
                "score": round(sum(scores) / max(len(scores), 1), 6),
            }
        )
    return json.dumps(
        {PREDICTION_INDEX_COLUMN: index, "text": example["text"], "entities": entities}, ensure_ascii=False
    )


def check_tag_names(label_names: list[str], metric_mode: str) -> None:
    """One sentence naming the first label that entity scoring in `metric_mode` cannot read: tags are ``O``
    or a prefix letter, ``-`` and a type (``B-PER``); strict mode reads IOB2 (B, I), conlleval also IOBES."""
    prefixes = "BI" if metric_mode == "strict" else "BIES"
    for name in label_names:
        if name != "O" and not (len(name) > 2 and name[0] in prefixes and name[1] == "-"):
            examples = ", ".join(f"{prefix}-PER" for prefix in prefixes)
            raise ConfigError(
                f"Tag {name!r} (of data.init_args.label_names, or else of the training split's tags column)"
                f" is not an entity tag that metric_mode {metric_mode} reads (O, or a prefix and a type:"
                f" {examples})."
            )
