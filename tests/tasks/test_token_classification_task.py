"""Turning word-level tag predictions into entities with character spans (the NER predict output)."""

from __future__ import annotations

import json

import pytest

from neobert_tasks.tasks.token_classification import entities_record

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _example(text: str) -> dict:
    words, offsets, position = [], [], 0
    for word in text.split():
        start = text.index(word, position)
        words.append(word)
        offsets.append((start, start + len(word)))
        position = start + len(word)
    return {"text": text, "words": words, "word_offsets": offsets}


def test_entities_carry_type_text_offsets_and_mean_score():
    example = _example("Angela Merkel met  staff of the United Nations .")
    tags = ["B-PER", "I-PER", "O", "O", "O", "O", "B-ORG", "I-ORG", "O"]
    predictions = {word: (LABELS.index(tag), 0.5 + 0.05 * word) for word, tag in enumerate(tags)}
    record = json.loads(entities_record(7, example, predictions, LABELS, "conlleval"))
    assert record["index"] == 7 and record["text"] == example["text"]
    assert [(e["type"], e["text"]) for e in record["entities"]] == [
        ("PER", "Angela Merkel"),
        ("ORG", "United Nations"),
    ]
    for entity in record["entities"]:
        assert example["text"][entity["start"] : entity["end"]] == entity["text"]
    assert record["entities"][0]["score"] == round((0.5 + 0.55) / 2, 6)


def test_strict_mode_drops_an_entity_that_starts_with_i_and_missing_words_are_o():
    example = _example("in Paris and Berlin")
    predictions = {1: (LABELS.index("I-LOC"), 0.9), 3: (LABELS.index("B-LOC"), 0.8)}  # words 0 and 2 unscored
    lenient = json.loads(entities_record(0, example, predictions, LABELS, "conlleval"))
    strict = json.loads(entities_record(0, example, predictions, LABELS, "strict"))
    assert [e["text"] for e in lenient["entities"]] == ["Paris", "Berlin"]
    assert [e["text"] for e in strict["entities"]] == ["Berlin"]


def test_labels_that_are_not_entity_tags_are_refused_in_one_sentence():
    from neobert_tasks.errors import ConfigError  # noqa: PLC0415
    from neobert_tasks.tasks import TokenClassificationTask  # noqa: PLC0415
    from tests.conftest import tiny_config_kwargs  # noqa: PLC0415

    def task(labels: list[str], mode: str = "conlleval") -> TokenClassificationTask:
        return TokenClassificationTask(
            label_names=labels, metric_mode=mode, pretrained=None, model_config=tiny_config_kwargs()
        )

    where = r"\(of data.init_args.label_names, or else of the training split's tags column\)"
    with pytest.raises(ConfigError, match=rf"Tag 'PER' {where} is not an entity tag"):
        task(["O", "PER", "LOC"])
    with pytest.raises(ConfigError, match=r"Tag 'S-PER' .* metric_mode strict reads \(O, or a prefix"):
        task(["O", "B-PER", "I-PER", "S-PER"], mode="strict")
    # IOBES data is scored in conlleval mode; strict IOB2 scoring, which knows no S- or E-, is left out.
    iobes = task(["O", "B-PER", "I-PER", "E-PER", "S-PER"])
    assert list(iobes.metrics) == ["conlleval"]
    assert list(task(LABELS).metrics) == ["conlleval", "strict"]
