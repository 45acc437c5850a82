"""Predictions of a trained task module on a split, and the kinds of mistakes a NER model makes.

`collect_predictions` runs a task's own ``predict_step`` over any dataloader (the validation split, whose
gold labels ``predict`` would not write out), so an analysis sees exactly what ``predict`` would produce.

`entity_errors` sorts every entity a NER model got wrong into the usual error kinds: a predicted entity
over the right words with the wrong type (``type``), the right type over overlapping but different
words (``boundary``), both wrong (``boundary and type``), a gold entity with no overlapping prediction
(``missed``), and a prediction overlapping no gold entity (``spurious``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch

from neobert_tasks.metrics.entities import extract_entities
from neobert_tasks.prediction_writer import flatten_outputs

ERROR_KINDS = ("type", "boundary", "boundary and type", "missed", "spurious")

Entity = tuple[str, int, int]  # (type, first word, end word exclusive), as `extract_entities` gives


@torch.no_grad()
def collect_predictions(
    module: torch.nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], batch_keys: Sequence[str] = ()
) -> dict[str, list]:
    """``module.predict_step`` over every batch, flattened to one list per output key in batch order.

    Args:
        module: A trained task (``SequenceClassificationTask``, ``TokenClassificationTask``, ...).
        batches: A dataloader, e.g. ``datamodule.val_dataloader()``.
        batch_keys: Batch entries to return beside the predictions, one per row (``("labels",)`` for
            sentence-level labels; token-level labels do not line up with word predictions).
    """
    was_training = module.training
    module.eval()
    device = next(module.parameters()).device
    outputs = []
    for batch_index, batch in enumerate(batches):
        batch = {key: value.to(device) for key, value in batch.items()}
        outputs.append({**module.predict_step(batch, batch_index), **{key: batch[key] for key in batch_keys}})
    module.train(was_training)
    return flatten_outputs(outputs)


def word_tags(
    outputs: Mapping[str, list], label_names: Sequence[str], word_counts: Sequence[int]
) -> list[list[str]]:
    """Per example, the predicted tag of each word from `collect_predictions` of a token classifier.

    ``word_counts[i]`` is the number of words of example ``i``. A word predicted twice (overlapping
    windows) keeps its first prediction, as the task's metric does; a word never scored (cut off by
    ``limit_eval_samples`` or a window limit) is tagged ``O``.
    """
    tags = [["O"] * count for count in word_counts]
    predicted = zip(outputs["example"], outputs["word"], outputs["prediction"], strict=True)
    # Last to first, so that a word's first prediction is the one written last.
    for example, word, prediction in reversed(list(predicted)):
        tags[example][word] = label_names[prediction]
    return tags


def _overlaps(first: Entity, second: Entity) -> bool:
    return first[1] < second[2] and second[1] < first[2]


def _gold_error(gold: Entity, wrong_predictions: set[Entity]) -> tuple[str, Entity, Entity | None]:
    """``(kind, gold, culprit)`` of a gold entity that was not predicted exactly (see `sentence_errors`)."""
    overlapping = sorted(
        (entity for entity in wrong_predictions if _overlaps(gold, entity)), key=lambda item: item[1]
    )
    same_span = [entity for entity in overlapping if entity[1:] == gold[1:]]
    if same_span:
        return "type", gold, same_span[0]
    same_type = [entity for entity in overlapping if entity[0] == gold[0]]
    if same_type:
        return "boundary", gold, same_type[0]
    if overlapping:
        return "boundary and type", gold, overlapping[0]
    return "missed", gold, None


def sentence_errors(
    gold_tags: Sequence[str], predicted_tags: Sequence[str], mode: str = "conlleval"
) -> list[tuple[str, Entity | None, Entity | None]]:
    """``(kind, gold entity or None, predicted entity or None)`` for each mistake in one sentence."""
    gold = extract_entities(gold_tags, mode)
    predicted = extract_entities(predicted_tags, mode)
    wrong_gold, wrong_predicted = gold - predicted, predicted - gold
    errors = [_gold_error(entity, wrong_predicted) for entity in sorted(wrong_gold, key=lambda item: item[1])]
    # Entities of one tag sequence never overlap, so a wrong prediction overlapping a gold entity was
    # charged to that (wrongly predicted) gold entity above.
    for entity in sorted(wrong_predicted, key=lambda item: item[1]):
        if not any(_overlaps(entity, gold_entity) for gold_entity in gold):
            errors.append(("spurious", None, entity))
    return errors


def _span_text(words: Sequence[str], entity: Entity | None) -> str | None:
    return None if entity is None else " ".join(words[entity[1] : entity[2]])


def entity_errors(
    sentences: Sequence[Sequence[str]],
    gold_tags: Sequence[Sequence[str]],
    predicted_tags: Sequence[Sequence[str]],
    mode: str = "conlleval",
) -> pd.DataFrame:
    """One row per NER mistake over a corpus: ``sentence`` (index), ``kind`` (one of `ERROR_KINDS`),
    ``gold_type``, ``gold_text``, ``predicted_type``, ``predicted_text``.

    A gold entity that several predictions overlap is one error, charged to the prediction with the
    same span, else the same type, else the first one; a prediction that overlaps some gold entity is
    never also counted as spurious.
    """
    rows = []
    for index, (words, gold, predicted) in enumerate(zip(sentences, gold_tags, predicted_tags, strict=True)):
        for kind, *entities in sentence_errors(gold, predicted, mode):
            # Per entity (gold, then predicted): its type and its words, None for an absent one.
            described = [(entity and entity[0], _span_text(words, entity)) for entity in entities]
            rows.append((index, kind, *described[0], *described[1]))
    columns = ["sentence", "kind", "gold_type", "gold_text", "predicted_type", "predicted_text"]
    return pd.DataFrame(rows, columns=columns)
