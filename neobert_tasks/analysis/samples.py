"""Small SYNTHETIC datasets that stand in for the benchmark data when ``../shared/data`` is absent.

They let the notebooks run end to end on a fresh clone; their scores mean nothing about the benchmarks.

* `synthetic_long_documents`: "documents" of 20 to 60 sentiment sentences (e.g. the quickstart's SST-2
  sample in ``data/quickstart``) glued together, most of them of the document's label; a model sees more
  of the evidence the more tokens it reads, as on real long documents.
* `quickstart_as_glue_sst2`: not synthetic: the repository's SST-2 sample (``data/quickstart``) laid out as
  a GLUE data folder, so that the GLUE suite can run its ``sst2`` task on it.
* `synthetic_ner_sentences`: template sentences with invented names, tagged in CoNLL-2003's IOB2 scheme
  (PER, ORG, LOC, MISC).
* `sentiment_triplets` and `sentiment_similarity_pairs`: embedding training and STS-style evaluation data
  from the SST-2 sample, where "similar" means "of the same sentiment" (a stand-in for NLI triplets and
  STS-B).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

# CoNLL-2003's tag names in the hub's id order, which the synthetic NER sentences use too.
CONLL2003_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]

# Invented entities (any resemblance to real ones is chance) and sentence templates with {TYPE} slots.
SYNTHETIC_ENTITIES = {
    "PER": ["Anna Keller", "Tomas Ruiz", "Mei Lin", "Kofi Mensah", "Olga Petrova", "Rahul Shah", "Lars Berg"],
    "ORG": ["Northwind Bank", "Helio Motors", "Atlas Airlines", "Greenfield University", "Riverside FC"],
    "LOC": ["Lisbon", "Nairobi", "New Delhi", "Oslo", "Buenos Aires", "Osaka", "Cape Town"],
    "MISC": ["Olympic", "French", "Nobel Prize", "World Cup", "Japanese", "Grand Prix"],
}
SYNTHETIC_TEMPLATES = [
    "{PER} said on Monday that {ORG} would open an office in {LOC} .",
    "{ORG} shares rose 3 percent in {LOC} trading .",
    "{PER} won the {MISC} title in {LOC} on Sunday .",
    "The {MISC} delegation met {PER} in {LOC} .",
    "{PER} , chief executive of {ORG} , resigned after ten years .",
    "Police in {LOC} arrested two men on Tuesday .",
    "{ORG} beat {ORG} 2-1 in {LOC} .",
    "{PER} told reporters that the {MISC} market was calm .",
]


def synthetic_long_documents(
    sentences: Sequence[str],
    labels: Sequence[str],
    count: int,
    sentences_per_document: tuple[int, int] = (20, 60),
    label_share: float = 0.7,
    seed: int = 0,
) -> pd.DataFrame:
    """``count`` documents (columns ``title``, ``text``, ``label``) made of randomly drawn sentences.

    Documents take the sentence labels in turn (so the classes are balanced); each of a document's
    sentences is drawn from the sentences of its label with probability ``label_share``, otherwise from
    those of another label, so the label is what most of its sentences say and each sentence read is
    more evidence. Sentences are joined with newlines, one paragraph each.
    """
    generator = random.Random(seed)
    names = sorted(set(labels))
    pools = {
        name: [text for text, label in zip(sentences, labels, strict=True) if label == name] for name in names
    }
    rows = []
    for index in range(count):
        label = names[index % len(names)]
        others = [name for name in names if name != label] or [label]
        picked = [
            generator.choice(pools[label if generator.random() < label_share else generator.choice(others)])
            for _ in range(generator.randint(*sentences_per_document))
        ]
        rows.append({"title": f"Synthetic document {index}", "text": "\n".join(picked), "label": label})
    return pd.DataFrame(rows)


def synthetic_ner_sentence(template: str, generator: random.Random) -> tuple[list[str], list[str]]:
    """Fill one template's slots with random entities; return its words and their IOB2 tags."""
    words, tags = [], []
    for piece in template.split():
        if piece.startswith("{") and piece.endswith("}"):
            entity_type = piece[1:-1]
            entity_words = generator.choice(SYNTHETIC_ENTITIES[entity_type]).split()
            words += entity_words
            tags += [f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(entity_words) - 1)
        else:
            words.append(piece)
            tags.append("O")
    return words, tags


def synthetic_ner_sentences(count: int, seed: int = 0) -> pd.DataFrame:
    """``count`` synthetic sentences with columns ``tokens`` and ``ner_tags`` (tag names, IOB2)."""
    generator = random.Random(seed)
    rows = [synthetic_ner_sentence(generator.choice(SYNTHETIC_TEMPLATES), generator) for _ in range(count)]
    return pd.DataFrame(rows, columns=["tokens", "ner_tags"])


def quickstart_as_glue_sst2(quickstart_dir: str | Path, glue_dir: str | Path) -> Path:
    """Write ``<glue_dir>/sst2/{train,validation}.csv`` from the quickstart sample; return ``glue_dir``.

    The sample's class names become GLUE SST-2's label ids (``negative`` 0, ``positive`` 1).
    """
    label_ids = {"negative": 0, "positive": 1}
    task_dir = Path(glue_dir) / "sst2"
    task_dir.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation"):
        frame = pd.read_csv(Path(quickstart_dir) / f"{split}.csv")
        frame.assign(label=frame["label"].map(label_ids)).to_csv(task_dir / f"{split}.csv", index=False)
    return Path(glue_dir)


def write_splits(frames: Mapping[str, pd.DataFrame], directory: str | Path) -> Path:
    """Write ``{split name: frame}`` as ``<directory>/<split>.parquet``, the layout ``data_dir`` reads."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        frame.to_parquet(directory / f"{split}.parquet", index=False)
    return directory


def sentiment_triplets(sentences: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Per sentence of ``sentences`` (``sentence``, ``label``): itself as ``anchor``, another sentence of its
    label as ``positive`` and one of the other label as ``negative``."""
    generator = random.Random(seed)
    by_label = {label: group["sentence"].tolist() for label, group in sentences.groupby("label")}
    rows = []
    for sentence, label in zip(sentences["sentence"], sentences["label"], strict=True):
        others = [text for text in by_label[label] if text != sentence]
        opposite = [text for other, texts in by_label.items() if other != label for text in texts]
        if others and opposite:
            rows.append((sentence, generator.choice(others), generator.choice(opposite)))
    return pd.DataFrame(rows, columns=["anchor", "positive", "negative"])


def sentiment_similarity_pairs(sentences: pd.DataFrame, pairs: int, seed: int = 0) -> pd.DataFrame:
    """``pairs`` random pairs of ``sentences`` in an STS file's columns: ``sentence1``, ``sentence2`` and a
    ``score`` of 1.0 when both have the same label, else 0.0."""
    generator = random.Random(seed)
    rows = []
    for _ in range(pairs):
        first, second = generator.sample(range(len(sentences)), 2)
        same = sentences["label"].iloc[first] == sentences["label"].iloc[second]
        rows.append((sentences["sentence"].iloc[first], sentences["sentence"].iloc[second], float(same)))
    return pd.DataFrame(rows, columns=["sentence1", "sentence2", "score"])
