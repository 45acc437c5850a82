"""Entity-level precision, recall and F1 for named-entity recognition, equal to the ``seqeval`` package's.

NER is scored on whole entities, not on tags: a predicted entity counts only when its type, first word and
last word all match a gold entity. Two ways of reading entities out of a tag sequence are offered:

``mode="conlleval"`` (the default), seqeval's default mode and the CoNLL-2000 ``conlleval`` script's
lenient reading. Each tag is split into a one-letter prefix (its first character) and a type (what follows
the first ``-`` after the prefix; ``"_"`` when that is empty, so ``"B"`` and ``"B-"`` are of type ``"_"``).
Between a previous tag ``p`` and the current tag ``c``,

* the open entity ends when ``p`` is ``E`` or ``S``; when ``p`` is ``B`` or ``I`` and ``c`` is ``B``, ``S``
  or ``O``; or when ``p`` is neither ``O`` nor ``.`` and the types differ;
* an entity starts at ``c`` when ``c`` is ``B`` or ``S``; when ``c`` is ``I`` or ``E`` and ``p`` is ``E``,
  ``S`` or ``O``; or when ``c`` is neither ``O`` nor ``.`` and the types differ.

So an ``I-X`` after ``O`` or after a tag of another type opens an entity, ``B-X B-X`` is two entities,
IOBES sequences (``S-X``, ``B-X I-X E-X``) are read as such, and an entity ends at the end of the sequence.
In :func:`extract_entities`, the ``.`` prefix and unknown prefix letters follow seqeval's rules too, odd as
they are (an entity may then "start" at a word before its first tag); :class:`EntityF1` refuses label
names with such prefixes (see ``_LABEL_PREFIXES``).

``mode="strict"`` is seqeval's ``mode="strict", scheme=IOB2``: an entity is a ``B-X`` followed by any
number of ``I-X`` of the same type, and nothing else. An ``I-X`` that does not continue a ``B-X``/``I-X``
of its own type belongs to no entity. The type is what follows the prefix with leading and trailing ``-``
removed. Only the prefixes ``B``, ``I`` and ``O`` are allowed (seqeval raises on others, and so does this).

Entities are ``(type, start, end)`` tuples of word positions with ``end`` exclusive, like a Python slice
(seqeval's ``get_entities`` reports the last word instead; its ``scheme`` entities are exclusive too).

:class:`EntityF1` accumulates per-word predictions under DDP and reports micro precision/recall/F1 over
all entities, the same three per entity type, and word-level tag accuracy. Its numbers are seqeval's,
including 0.0 wherever seqeval divides by zero (it warns and returns 0 with its default ``zero_division``).
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat
from torchmetrics.utilities.distributed import gather_all_tensors

MODES = ("conlleval", "strict")

# Prefix letters of the conlleval reading, grouped by the part they play in ending and starting entities.
_CLOSING_PREFIXES = frozenset("ES")  # an entity always ends after one of these
_OPEN_PREFIXES = frozenset("BI")  # an entity runs on after these unless the next tag breaks it
_BREAKING_PREFIXES = frozenset("BSO")  # these end an entity opened by B or I
_OPENING_PREFIXES = frozenset("BS")  # these always start an entity
_CONTINUING_PREFIXES = frozenset("IE")  # these start an entity only after an entity end or outside
_NEUTRAL_PREFIXES = frozenset("O.")  # a change of type at or after these neither ends nor starts entities
_RESTART_PREFIXES = frozenset("ESO")  # after these, I and E start a new entity

# Label names the metric accepts per mode. In conlleval mode, "." and unknown letters are left out because
# seqeval reads a corpus as one long sequence, where such tags let an entity begin in an earlier sentence;
# scoring sentences one by one (needed to group words by example) could not reproduce that.
_LABEL_PREFIXES = {"conlleval": frozenset("OBIES"), "strict": frozenset("OBI")}
# EntityF1's states, one entry per word each, in the order `EntityF1.update` takes them.
_STATES = ("example_ids", "word_ids", "predictions", "targets")
# Entity counts, in the order `_precision_recall_f1` takes them.
_KINDS = ("correct", "predicted", "gold")


def _split_tag(tag: str, mode: str) -> tuple[str, str]:
    """Split a tag into its prefix letter and its entity type, as seqeval reads it in ``mode``.

    Raises:
        ValueError: for an empty tag, or in strict mode for a prefix other than B, I or O.
    """
    if not tag:
        raise ValueError("An empty string is not a tag.")
    prefix, rest = tag[0], tag[1:]
    if mode != "strict":
        return prefix, rest.split("-", maxsplit=1)[-1] or "_"
    if prefix not in _LABEL_PREFIXES["strict"]:
        raise ValueError(f"Tag {tag!r} is not an IOB2 tag: strict mode allows the prefixes B, I and O.")
    return prefix, rest.strip("-") or "_"


def _conlleval_entities(split_tags: Sequence[tuple[str, str]]) -> set[tuple[str, int, int]]:
    """Entities of ``(prefix, type)`` pairs under the lenient conlleval rules of the module docstring."""
    entities = set()
    previous_prefix, previous_type, start = "O", "", 0
    # A trailing "O" closes an entity still open at the end of the sequence.
    for position, (prefix, entity_type) in enumerate([*split_tags, ("O", "_")]):
        type_changes = previous_type != entity_type
        ends = (
            previous_prefix in _CLOSING_PREFIXES
            or (previous_prefix in _OPEN_PREFIXES and prefix in _BREAKING_PREFIXES)
            or (previous_prefix not in _NEUTRAL_PREFIXES and type_changes)
        )
        starts = (
            prefix in _OPENING_PREFIXES
            or (prefix in _CONTINUING_PREFIXES and previous_prefix in _RESTART_PREFIXES)
            or (prefix not in _NEUTRAL_PREFIXES and type_changes)
        )
        # The entity that ends here is recorded before a new one starts at this same word.
        if ends:
            entities.add((previous_type, start, position))
        if starts:
            start = position
        previous_prefix, previous_type = prefix, entity_type
    return entities


def _strict_entities(split_tags: Sequence[tuple[str, str]]) -> set[tuple[str, int, int]]:
    """Entities of ``(prefix, type)`` pairs read as well-formed IOB2 chunks only (``B-X`` then ``I-X``...)."""
    entities = set()
    open_type, start = None, 0
    for position, (prefix, entity_type) in enumerate([*split_tags, ("O", "_")]):
        if prefix == "I" and entity_type == open_type:
            continue
        if open_type is not None:
            entities.add((open_type, start, position))
            open_type = None
        if prefix == "B":
            open_type, start = entity_type, position
    return entities


_READERS = {"conlleval": _conlleval_entities, "strict": _strict_entities}


def extract_entities(tags: Sequence[str], mode: str = "conlleval") -> set[tuple[str, int, int]]:
    """Read the entities of one tag sequence.

    Args:
        tags: the tags of one sentence or document, one per word, e.g. ``["B-PER", "I-PER", "O"]``.
        mode: ``"conlleval"`` (seqeval's default) or ``"strict"`` (seqeval's strict IOB2); see the module
            docstring for the rules.

    Returns:
        The set of ``(type, start, end)`` entities, ``end`` exclusive: ``{("PER", 0, 2)}`` above.

    Raises:
        ValueError: for an unknown mode, an empty tag, or (strict mode) a prefix other than B, I or O.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown mode {mode!r}; valid modes are: {', '.join(MODES)}.")
    return _READERS[mode]([_split_tag(tag, mode) for tag in tags])


def _split_label_names(label_names: Sequence[str], mode: str) -> list[tuple[str, str]]:
    """``(prefix, type)`` of every label name, checking that each suits ``mode`` (see ``_LABEL_PREFIXES``)."""
    if len(set(label_names)) != len(label_names):
        raise ValueError(f"label_names has duplicates: {list(label_names)}.")
    allowed = _LABEL_PREFIXES[mode]
    for name in label_names:
        if not name or name[0] not in allowed:
            prefixes = ", ".join(sorted(allowed))
            raise ValueError(f"Label {name!r} does not start with one of {prefixes}, as {mode} mode needs.")
    return [_split_tag(name, mode) for name in label_names]


def _precision_recall_f1(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from entity counts, 0.0 for every 0/0 as seqeval's default gives."""
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    # Same arithmetic as seqeval (F1 from the rounded precision and recall, not from the counts) so the
    # values agree to the last bit rather than to a few ulps.
    f1 = 2.0 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _gather_as_long(tensor: torch.Tensor, group=None) -> list[torch.Tensor]:
    """All-gather that casts to int64 first.

    torchmetrics stands in an empty *float* tensor for the list state of a process that saw no update;
    gathering that next to other processes' int64 tensors would mix element sizes in one collective.
    All states here are integers, so the cast loses nothing.
    """
    return gather_all_tensors(tensor.long(), group=group)


class EntityF1(Metric):
    """Entity-level micro precision/recall/F1, per-type scores and tag accuracy, equal to seqeval's.

    Words are fed with the example they belong to and their position in it, so that an example split into
    windows scored in different batches, or on different processes, is put back together before its
    entities are read. A word seen twice (overlapping windows) counts once: its first occurrence, in the
    order updates were made (under DDP: rank 0's updates, then rank 1's, ...). Words missing from an
    example are not filled in: the words present are read as one sequence in word order.

    ``compute()`` returns float64 tensors (float32 on MPS, which has no float64): ``precision``, ``recall``,
    ``f1`` (micro over all entities), ``precision_<TYPE>``, ``recall_<TYPE>``, ``f1_<TYPE>`` for every
    entity type of ``label_names`` (0.0 for a type with no gold and no predicted entity), and
    ``accuracy`` (the fraction of words whose predicted tag is the gold tag).

    Args:
        label_names: tag of each tag id, e.g. CoNLL-2003's ``["O", "B-PER", "I-PER", ...]``. In conlleval
            mode every name must start with O, B, I, E or S; in strict mode with O, B or I.
        mode: ``"conlleval"`` (seqeval's default) or ``"strict"`` (seqeval's strict IOB2).
        kwargs: passed to ``torchmetrics.Metric``.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, label_names: Sequence[str], mode: str = "conlleval", **kwargs) -> None:
        kwargs.setdefault("dist_sync_fn", _gather_as_long)
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Unknown mode {mode!r}; valid modes are: {', '.join(MODES)}.")
        self.label_names = list(label_names)
        self.mode = mode
        # Tags are split once here, not once per word in compute().
        self._split_labels = _split_label_names(self.label_names, mode)
        self.entity_types = sorted(
            {entity_type for prefix, entity_type in self._split_labels if prefix != "O"}
        )
        self._label_ids = {name: index for index, name in enumerate(self.label_names)}
        # Not a metric state and not reset: ids given by update_sequences stay unique for the metric's life.
        self._sequences_added = 0
        for name in _STATES:
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(
        self,
        example_ids: torch.Tensor,
        word_ids: torch.Tensor,
        predictions: torch.Tensor,
        targets: torch.Tensor,
    ) -> None:
        """Add words: four 1-D integer tensors of equal length, one entry per word (not per sub-token).

        Args:
            example_ids: index of the sentence or document each word belongs to.
            word_ids: position of each word within its example.
            predictions: predicted tag id of each word.
            targets: gold tag id of each word.
        """
        columns = (example_ids, word_ids, predictions, targets)
        if any(column.ndim != 1 or column.shape != example_ids.shape for column in columns):
            shapes = [tuple(column.shape) for column in columns]
            raise ValueError(f"EntityF1.update needs four 1-D tensors of equal length, got shapes {shapes}.")
        if any(column.is_floating_point() or column.is_complex() for column in columns):
            raise ValueError("EntityF1.update needs integer tensors (ids), not floating-point ones.")
        for name, column in zip(_STATES, columns, strict=True):
            getattr(self, name).append(column.detach().long())

    def update_sequences(self, predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> None:
        """Add whole tag sequences, each as a new example, seqeval style (for tests and scripts).

        The examples get negative ids, so they never meet the (non-negative) dataset indices given to
        :meth:`update`; under DDP the ids are interleaved by rank so that processes never share one.

        Args:
            predicted: predicted tags, one list per example.
            gold: gold tags, the same shape as ``predicted``.
        """
        if len(predicted) != len(gold):
            raise ValueError(f"{len(predicted)} predicted sequences but {len(gold)} gold ones.")
        rank, world_size = 0, 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
        columns = ([], [], [], [])
        for predicted_tags, gold_tags in zip(predicted, gold, strict=True):
            if len(predicted_tags) != len(gold_tags):
                raise ValueError(f"Sequence lengths differ: {len(predicted_tags)} vs {len(gold_tags)} tags.")
            example_id = -1 - (self._sequences_added * world_size + rank)
            self._sequences_added += 1
            columns[0].extend([example_id] * len(gold_tags))
            columns[1].extend(range(len(gold_tags)))
            columns[2].extend(self._tag_ids(predicted_tags))
            columns[3].extend(self._tag_ids(gold_tags))
        self.update(*(torch.tensor(column, dtype=torch.long, device=self.device) for column in columns))

    def _tag_ids(self, tags: Sequence[str]) -> list[int]:
        """Ids of ``tags`` in ``label_names``."""
        try:
            return [self._label_ids[tag] for tag in tags]
        except KeyError as error:
            raise ValueError(f"Tag {error.args[0]!r} is not one of label_names {self.label_names}.") from None

    def _words(self) -> tuple[torch.Tensor, ...]:
        """The accumulated words, sorted by (example, word), each (example, word) pair kept once."""
        states = [getattr(self, name) for name in _STATES]
        # After a DDP sync each state is one tensor; before, a list that is empty when nothing was added.
        if isinstance(self.example_ids, list) and not self.example_ids:
            return tuple(torch.zeros(0, dtype=torch.long) for _ in states)
        example_ids, word_ids, predictions, targets = (dim_zero_cat(state).long().cpu() for state in states)
        # np.unique gives each pair's first occurrence (it sorts stably when asked for indices), in order.
        pairs = torch.stack([example_ids, word_ids], dim=1).numpy()
        first = torch.from_numpy(np.unique(pairs, axis=0, return_index=True)[1])
        return example_ids[first], word_ids[first], predictions[first], targets[first]

    def _entity_counts(
        self, example_ids: torch.Tensor, predicted: list[tuple[str, str]], gold: list[tuple[str, str]]
    ) -> Counter:
        """Count correct, predicted and gold entities per type, keyed ``(kind, type)``, and over all types,
        keyed ``(kind, None)``.

        Args:
            example_ids: example of each word, sorted, so that each example's words are consecutive.
            predicted: ``(prefix, type)`` of each word's predicted tag.
            gold: ``(prefix, type)`` of each word's gold tag.
        """
        read_entities = _READERS[self.mode]
        counts = Counter()
        ends = torch.unique_consecutive(example_ids, return_counts=True)[1].cumsum(0).tolist()
        for start, end in itertools.pairwise([0, *ends]):
            predicted_entities = read_entities(predicted[start:end])
            gold_entities = read_entities(gold[start:end])
            found = (predicted_entities & gold_entities, predicted_entities, gold_entities)
            for kind, entities in zip(_KINDS, found, strict=True):
                counts.update((kind, key) for entity in entities for key in (entity[0], None))
        return counts

    def compute(self) -> dict[str, torch.Tensor]:
        """Scores of every word added so far (on every process, once synchronised); see the class doc."""
        example_ids, _, prediction_ids, target_ids = self._words()
        ids = torch.cat([prediction_ids, target_ids])
        if ids.numel() and (ids.min() < 0 or ids.max() >= len(self.label_names)):
            raise ValueError(f"Tag ids must lie in [0, {len(self.label_names)}), the range of label_names.")
        predicted = [self._split_labels[index] for index in prediction_ids.tolist()]
        gold = [self._split_labels[index] for index in target_ids.tolist()]
        counts = self._entity_counts(example_ids, predicted, gold)
        values = {}
        for entity_type in (None, *self.entity_types):  # None: micro over all types
            scores = _precision_recall_f1(*(counts[kind, entity_type] for kind in _KINDS))
            suffix = "" if entity_type is None else f"_{entity_type}"
            values.update(zip((f"precision{suffix}", f"recall{suffix}", f"f1{suffix}"), scores, strict=True))
        matches = (prediction_ids == target_ids).sum().item()
        values["accuracy"] = matches / prediction_ids.numel() if prediction_ids.numel() else 0.0
        dtype = torch.float32 if self.device.type == "mps" else torch.float64
        return {key: torch.tensor(value, dtype=dtype, device=self.device) for key, value in values.items()}
