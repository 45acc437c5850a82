"""Contrastive rows made from data of other tasks: NLI triplets (`nli_to_triplets`) and SQuAD question ->
paragraph pairs (`squad_pairs`) of `PairDataModule`.

- NLI (columns premise, hypothesis, label): anchor = a premise, positive = one of its entailed hypotheses,
  negative = one of its contradicting hypotheses. Rows are grouped by the exact premise text. A premise with
  several of either gives every entailment x contradiction combination, after exact repeats of a hypothesis
  are dropped: the sentence-transformers all-nli recipe. A premise without both gives nothing, and
  neutral or unlabelled (-1) rows are not used. Triplets keep the order in which premises first appear.
  The labels are a ClassLabel with entailment and contradiction among its names (GLUE MNLI, SNLI), integers
  0/1/2 read as entailment/neutral/contradiction, or the names themselves.
- SQuAD (columns question, context): anchor = the question, positive = its paragraph, one row per question.
  A paragraph is thus the positive of several rows; `UniqueTextBatchSampler` keeps those in different
  batches.

Both return a split whose columns are the role names, made by `datasets` operations so that the result is
cached and fingerprinted like a loaded split, and its tokenization is cached too.

`encode_roles` then tokenizes each role's text on its own, and hashes it (`text_hash`) so that batches can
be kept free of repeated texts.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from hashlib import blake2b

import datasets
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.checks import require_columns
from neobert_tasks.data.keys import ANCHOR, ATTENTION_MASK, INPUT_IDS, POSITIVE, ROLES, TEXT_HASHES, role_key
from neobert_tasks.data.labels import label_kind
from neobert_tasks.data.sources import DataError

# The columns `nli_to_triplets` reads (GLUE MNLI's and SNLI's names), and integer labels' classes in order.
PREMISE, HYPOTHESIS, NLI_LABEL = "premise", "hypothesis", "label"
NLI_CLASSES = ("entailment", "neutral", "contradiction")
# The columns `squad_pairs` reads.
QUESTION, CONTEXT = "question", "context"
# Per format option, the columns it reads (for error messages).
FORMAT_COLUMNS = {"nli_to_triplets": (PREMISE, HYPOTHESIS, NLI_LABEL), "squad_pairs": (QUESTION, CONTEXT)}


def nli_class_names(feature: object, origin: str) -> tuple[str, ...] | None:
    """Class name of each label id of an NLI label column (None for a column of names)."""
    kind = label_kind(feature)
    if kind == "class_label":
        names = tuple(feature.names)
        for needed in ("entailment", "contradiction"):
            if needed not in names:
                raise DataError(
                    f"Column '{NLI_LABEL}' of {origin} has classes {list(names)}, without '{needed}'"
                    " that nli_to_triplets needs."
                )
        return names
    if kind == "int":
        return NLI_CLASSES
    if kind == "str":
        return None
    raise DataError(f"Column '{NLI_LABEL}' of {origin} must hold NLI class ids or names, not {feature}.")


def nli_triplets(batch: dict[str, list], *, class_names: tuple[str, ...] | None) -> dict[str, list]:
    """(premise, entailed, contradicting hypothesis) triplets of a whole split given as one batch (see the
    module's description); other labels (neutral, -1 for unlabelled) are not used."""
    names = None if class_names is None else dict(enumerate(class_names))
    hypotheses: dict[str, tuple[dict, dict]] = {}  # premise -> (entailed, contradicting) as ordered sets
    for premise, hypothesis, label in zip(batch[PREMISE], batch[HYPOTHESIS], batch[NLI_LABEL], strict=True):
        name = label if names is None else names.get(label)
        if name in ("entailment", "contradiction"):
            entailed, contradicting = hypotheses.setdefault(premise, ({}, {}))
            (entailed if name == "entailment" else contradicting)[hypothesis] = None
    rows = [
        (premise, positive, negative)
        for premise, (entailed, contradicting) in hypotheses.items()
        for positive in entailed
        for negative in contradicting
    ]
    return {role: [row[position] for row in rows] for position, role in enumerate(ROLES)}


def nli_triplet_split(dataset: datasets.Dataset, split: str, origin: str) -> datasets.Dataset:
    """The triplets of an NLI split, made once and cached by `datasets` like any `map`."""
    require_columns(dataset, [PREMISE, HYPOTHESIS, NLI_LABEL], origin)
    class_names = nli_class_names(dataset.features[NLI_LABEL], origin)
    if class_names is not None:
        bounds = pc.min_max(dataset.with_format("arrow")[NLI_LABEL]).as_py()
        if bounds["min"] is not None and (bounds["min"] < -1 or bounds["max"] >= len(class_names)):
            raise DataError(
                f"Column '{NLI_LABEL}' of {origin} holds class ids from {bounds['min']} to {bounds['max']};"
                f" nli_to_triplets reads 0..{len(class_names) - 1} as {', '.join(class_names)}, -1 as none."
            )
    triplets = dataset.map(
        nli_triplets, batched=True, batch_size=None, remove_columns=dataset.column_names,
        fn_kwargs={"class_names": class_names}, desc=f"Making NLI triplets of {split}",
    )  # fmt: skip
    if len(triplets) == 0:
        raise DataError(
            f"Split '{split}' ({origin}) gives no NLI triplet: no premise has both an entailment and a"
            " contradiction hypothesis (an unlabelled test split? set its split option to null)."
        )
    return triplets


def squad_pair_split(dataset: datasets.Dataset, origin: str) -> datasets.Dataset:
    """(question, paragraph) pairs of a SQuAD split: its question and context columns, renamed."""
    require_columns(dataset, [QUESTION, CONTEXT], origin)
    return dataset.select_columns([QUESTION, CONTEXT]).rename_columns({QUESTION: ANCHOR, CONTEXT: POSITIVE})


def text_hash(token_ids: Sequence[int]) -> int:
    """A 64-bit hash of a text's token ids, the same in every process (Python's `hash` of str is not)."""
    digest = blake2b(array("q", token_ids).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def encode_roles(
    batch: dict[str, list],
    *,
    tokenizer: PreTrainedTokenizerBase,
    roles: tuple[tuple[str, str, str], ...],
    max_length: int,
) -> dict[str, list]:
    """Tokenize each (role, column, prefix) of `roles` on its own, the prefix put before each text, truncated
    to `max_length`; hash each text's token ids *without* its prefix, so a text repeated in another role
    (whose prefix differs) is still found."""
    encoded, hashes = {}, []
    for role, column, prefix in roles:
        texts = batch[column]
        options = {"truncation": True, "max_length": max_length, "return_token_type_ids": False}
        plain = tokenizer(texts, **options)
        inputs = tokenizer([prefix + text for text in texts], **options) if prefix else plain
        encoded[role_key(role, INPUT_IDS)] = inputs[INPUT_IDS]
        encoded[role_key(role, ATTENTION_MASK)] = inputs[ATTENTION_MASK]
        hashes.append([text_hash(ids) for ids in plain[INPUT_IDS]])
    encoded[TEXT_HASHES] = [list(row) for row in zip(*hashes, strict=True)]
    return encoded
