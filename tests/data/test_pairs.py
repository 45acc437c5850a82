"""`PairDataModule` (pairs and triplets for contrastive embeddings) and `UniqueTextBatchSampler`."""

from __future__ import annotations

import shutil
from collections import Counter
from types import SimpleNamespace

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from neobert_tasks.data import DataError, PairDataModule, UniqueTextBatchSampler
from neobert_tasks.data.collator import padded_length
from neobert_tasks.data.keys import ATTENTION_MASK, INPUT_IDS, PAIR_BATCH_KEYS, ROLES, role_key
from neobert_tasks.data.pair_formats import encode_roles, nli_triplet_split
from tests.conftest import shared_path as require_shared

# Every datamodule here trains without a validation split, which the base class warns about.
pytestmark = pytest.mark.filterwarnings("ignore:No validation split")


@pytest.fixture
def duplicated_rows(sentences):
    """Rows (of the tiny vocabulary) whose anchors repeat five times each and whose negatives are other rows'
    positives: texts that must not meet in one batch."""

    def rows(count: int = 240) -> dict[str, list[str]]:
        anchors, positives = sentences(count // 5), sentences(count, offset=7)
        return {
            "anchor": [anchors[row // 5 % len(anchors)] for row in range(count)],
            "positive": positives,
            "negative": [positives[(row * 7 + 3) % count] for row in range(count)],
        }

    return rows


def pair_module(data_dir, tokenizer, cache, **options) -> PairDataModule:
    datamodule = PairDataModule(tokenizer=tokenizer, data_dir=str(data_dir), cache_dir=cache, **options)
    datamodule.setup("fit")
    return datamodule


def row_texts(batch: dict[str, torch.Tensor]) -> list[set[tuple[int, ...]]]:
    """Per row of a collated batch, the token ids of its texts (padding removed)."""
    rows = [set() for _ in range(len(batch[role_key("anchor", INPUT_IDS)]))]
    for role in ROLES:
        if role_key(role, INPUT_IDS) not in batch:
            continue
        for position, (ids, mask) in enumerate(
            zip(batch[role_key(role, INPUT_IDS)], batch[role_key(role, ATTENTION_MASK)], strict=True)
        ):
            rows[position].add(tuple(ids[mask.bool()].tolist()))
    return rows


def assert_no_text_twice(rows: list[set[tuple[int, ...]]]) -> None:
    counts = Counter(text for row in rows for text in row)
    assert max(counts.values()) == 1, "a text occurs in two rows of one step"


# --------------------------------------------------------------------------------------------------------
# Sources, columns and formats.


def test_nli_triplet_file_gives_triplets(tmp_path, bert_tokenizer_dir, datasets_cache):
    source = require_shared("data", "nli_triplets", "dev.parquet")
    (tmp_path / "nli").mkdir()
    shutil.copy(source, tmp_path / "nli" / "train.parquet")
    datamodule = pair_module(tmp_path / "nli", bert_tokenizer_dir, datasets_cache, limit_train_samples=300)
    assert len(datamodule.load_raw_splits(["train"])[0]["train"]) == 6568
    batch = next(iter(datamodule.train_dataloader()))
    assert set(batch) == set(PAIR_BATCH_KEYS) and batch["anchor_input_ids"].shape[0] == 32


def test_train_split_option_reads_a_split_of_another_name(bert_tokenizer_dir, datasets_cache):
    directory = require_shared("data", "nli_triplets")
    datamodule = PairDataModule(
        tokenizer=bert_tokenizer_dir, data_dir=str(directory), train_split="dev", test_split=None,
        cache_dir=datasets_cache, limit_train_samples=64,
    )  # fmt: skip
    with pytest.warns(UserWarning, match="training runs without validation"):
        datamodule.setup("fit")
    assert len(datamodule.datasets["dev"]) == 64
    assert datamodule.val_dataloader() == []  # where the evaluation sets will hook in


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_pairs_from_a_file_without_negatives(
    suffix, write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_split("train", suffix, anchor=sentences(24), positive=sentences(24, offset=5))
    datamodule = pair_module(path.parent, tiny_tokenizer_dir, datasets_cache, batch_size=4)
    batches = list(datamodule.train_dataloader())
    assert set(batches[0]) == {
        role_key(role, key) for role in ("anchor", "positive") for key in ("input_ids", "attention_mask")
    }
    assert sum(len(batch["anchor_input_ids"]) for batch in batches) == 24


def test_triplets_whose_negative_column_has_another_name_are_said_to_train_as_pairs(
    write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    texts = {"q": sentences(24), "pos": sentences(24, offset=5), "neg": sentences(24, 9)}
    several = [[text, text] for text in sentences(24, 2)]  # several hard negatives per row
    path = write_split("train", ".jsonl", **texts, negs=several, pair_id=[f"p{row}" for row in range(24)])
    unused = r"so it trains on \(anchor, positive\) pairs; its text column\(s\) 'neg', 'negs' are not used"
    with pytest.warns(UserWarning, match=unused):
        datamodule = pair_module(
            path.parent, tiny_tokenizer_dir, datasets_cache, anchor_column="q", positive_column="pos"
        )
    assert "negative_input_ids" not in datamodule.datasets["train"].column_names


def test_custom_columns_and_prefixes(write_split, duplicated_rows, tiny_tokenizer_dir, datasets_cache):
    rows = duplicated_rows(20)
    path = write_split("train", question=rows["anchor"], answer=rows["positive"], wrong=rows["negative"])
    datamodule = pair_module(
        path.parent, tiny_tokenizer_dir, datasets_cache, anchor_column="question", positive_column="answer",
        negative_column="wrong", query_prefix="question : ", document_prefix="answer : ",
    )  # fmt: skip
    row = datamodule.datasets["train"][0]
    tokenizer = datamodule.tokenizer
    assert row["anchor_input_ids"] == tokenizer("question : " + rows["anchor"][0])["input_ids"]
    assert row["negative_input_ids"] == tokenizer("answer : " + rows["negative"][0])["input_ids"]


def test_hashes_ignore_prefixes_so_a_text_matches_across_roles(tiny_tokenizer_dir):
    tokenizer = PairDataModule(tokenizer=tiny_tokenizer_dir, data_dir="unused").tokenizer
    roles = (("anchor", "a", "question : "), ("positive", "b", "answer : "))
    encoded = encode_roles(
        {"a": ["the cat sat"], "b": ["the cat sat"]}, tokenizer=tokenizer, roles=roles, max_length=8
    )
    assert encoded["anchor_input_ids"] != encoded["positive_input_ids"]
    hashes = encoded["text_hashes"][0]
    assert hashes[0] == hashes[1]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"negative_column": "hard"}, r"Column 'hard' is missing from .*train\.parquet"),
        ({"anchor_column": "query"}, r"Column 'query' is missing from .*train\.parquet"),
    ],
)
def test_a_named_column_that_is_missing_is_an_error(
    options, message, write_split, sentences, tiny_tokenizer_dir, datasets_cache
):
    path = write_split("train", anchor=sentences(24), positive=sentences(24)[::-1])
    with pytest.raises(DataError, match=message):
        pair_module(path.parent, tiny_tokenizer_dir, datasets_cache, **options)


def test_format_options_refuse_what_does_not_apply(tiny_tokenizer_dir):
    with pytest.raises(DataError, match="Set one of nli_to_triplets and squad_pairs, not both"):
        PairDataModule(tokenizer=tiny_tokenizer_dir, data_dir="x", nli_to_triplets=True, squad_pairs=True)
    with pytest.raises(DataError, match=r"anchor_column \('q'\) does not apply with squad_pairs"):
        PairDataModule(tokenizer=tiny_tokenizer_dir, data_dir="x", squad_pairs=True, anchor_column="q")


NLI_ROWS = {
    "premise": ["p1", "p1", "p1", "p1", "p1", "p2", "p2", "p3", "p3", "p1"],
    "hypothesis": ["e1", "c1", "n1", "e2", "c2", "e3", "n3", "c4", "e4", "e1"],
    "label": [0, 2, 1, 0, 2, 0, 1, 2, 0, 0],
}
NLI_TRIPLETS = [
    ("p1", "e1", "c1"),
    ("p1", "e1", "c2"),
    ("p1", "e2", "c1"),
    ("p1", "e2", "c2"),
    ("p3", "e4", "c4"),
]


@pytest.mark.parametrize("labels", ["class_label", "int", "str"])
def test_nli_to_triplets_combines_each_premises_hypotheses(labels, tmp_path):
    names = ["entailment", "neutral", "contradiction"]
    values = [names[label] for label in NLI_ROWS["label"]] if labels == "str" else NLI_ROWS["label"]
    features = datasets.Features(
        premise=datasets.Value("string"), hypothesis=datasets.Value("string"),
        label=datasets.ClassLabel(names=names) if labels == "class_label" else datasets.Value(
            "string" if labels == "str" else "int64"
        ),
    )  # fmt: skip
    raw = datasets.Dataset.from_dict({**NLI_ROWS, "label": values}, features=features)
    triplets = nli_triplet_split(raw, "train", "tiny NLI")
    # p1: 2 entailments (e1 twice, counted once) x 2 contradictions; p2 has no contradiction.
    assert (
        list(zip(triplets["anchor"], triplets["positive"], triplets["negative"], strict=True)) == NLI_TRIPLETS
    )


def test_nli_labels_out_of_range_are_named(tmp_path):
    raw = datasets.Dataset.from_dict({**NLI_ROWS, "label": [0, 2, 5, 0, 2, 0, 1, 2, 0, 0]})
    with pytest.raises(DataError, match=r"Column 'label' of tiny NLI holds class ids from 0 to 5"):
        nli_triplet_split(raw, "train", "tiny NLI")


def test_mnli_mismatched_gives_the_all_nli_triplets():
    mismatched = datasets.Dataset.from_parquet(
        str(require_shared("data", "glue", "mnli", "validation_mismatched.parquet"))
    )
    triplets = nli_triplet_split(mismatched, "train", "MNLI mismatched")
    assert len(triplets) == 3340
    # The shared all-nli test file holds these triplets (from MNLI dev_mismatched, after 3,247 SNLI ones).
    reference = pd.read_parquet(require_shared("data", "nli_triplets", "test.parquet")).iloc[3247:]
    made = set(zip(triplets["anchor"], triplets["positive"], triplets["negative"], strict=True))
    assert made == set(zip(reference["anchor"], reference["positive"], reference["negative"], strict=True))


def test_squad_pairs_are_questions_and_their_paragraphs(bert_tokenizer_dir):
    directory = require_shared("data", "squad")
    datamodule = PairDataModule(tokenizer=bert_tokenizer_dir, data_dir=str(directory), squad_pairs=True)
    raw, _ = datamodule.load_raw_splits(["train"])
    pairs = raw["train"]
    assert len(pairs) == 78161 and pairs.column_names == ["anchor", "positive"]
    source = pd.read_parquet(directory / "train.parquet", columns=["question", "context"]).iloc[0]
    assert (pairs[0]["anchor"], pairs[0]["positive"]) == (source["question"], source["context"])


# --------------------------------------------------------------------------------------------------------
# Batches.


@pytest.fixture
def duplicated_dir(write_split, duplicated_rows):
    return write_split("train", **duplicated_rows()).parent


def test_batch_keys_and_shapes(duplicated_dir, tiny_tokenizer_dir, datasets_cache):
    datamodule = pair_module(duplicated_dir, tiny_tokenizer_dir, datasets_cache, batch_size=8)
    batch = next(iter(datamodule.train_dataloader()))
    assert list(batch) == list(PAIR_BATCH_KEYS)
    for role in ROLES:
        ids, mask = batch[role_key(role, INPUT_IDS)], batch[role_key(role, ATTENTION_MASK)]
        assert ids.shape == mask.shape and ids.shape[0] == 8 and ids.shape[1] % 8 == 0
        assert ids.shape[1] == padded_length(int(mask.sum(dim=1).max()), 8)  # each role to its own longest
        assert torch.equal(mask.bool(), ids != 0)


def test_lengths_are_each_rows_longest_text_and_its_padded_cost(
    duplicated_dir, tiny_tokenizer_dir, datasets_cache
):
    """The datamodule's lengths interface (bench/padding.py reads it) on rows of three texts."""
    datamodule = pair_module(duplicated_dir, tiny_tokenizer_dir, datasets_cache, batch_size=8)
    batch = next(iter(datamodule._loader(datamodule._dataset("train"), batch_size=4)))  # first rows, in order
    longest = [
        max(int(batch[role_key(role, ATTENTION_MASK)][row].sum()) for role in ROLES) for row in range(4)
    ]
    assert datamodule.sequence_lengths("train")[:4] == longest
    expected_costs = [len(ROLES) * padded_length(length, 8) for length in longest]
    assert datamodule.token_budget_lengths("train")[:4] == expected_costs


@pytest.mark.parametrize(
    "options",
    [
        {"group_by_length": True},
        {"group_by_length": False},
        {"max_tokens": 160},
        {"max_tokens": "auto"},
    ],
)
@pytest.mark.parametrize("ranks", [1, 2])
def test_no_text_twice_in_a_step_and_no_row_lost(
    options, ranks, duplicated_dir, tiny_tokenizer_dir, datasets_cache
):
    datamodule = pair_module(duplicated_dir, tiny_tokenizer_dir, datasets_cache, batch_size=8, **options)
    loaders = []
    for rank in range(ranks):
        datamodule.trainer = SimpleNamespace(distributed_sampler_kwargs={"num_replicas": ranks, "rank": rank})
        loaders.append(datamodule.train_dataloader())
    assert len({len(loader) for loader in loaders}) == 1
    for step in zip(*loaders, strict=True):
        assert len({len(batch["anchor_input_ids"]) for batch in step}) == 1  # equal for the all-gather
        assert_no_text_twice([row for batch in step for row in row_texts(batch)])
        if isinstance(options.get("max_tokens"), int):
            assert all(
                sum(batch[key].numel() for key in batch if key.endswith(INPUT_IDS)) <= 160 for batch in step
            )
    seen = Counter(row for loader in loaders for batch in loader.sampler for row in batch)
    assert set(seen) == set(range(240))
    assert sum(seen.values()) - 240 < ranks  # only the repeats that fill the last step


@pytest.mark.parametrize("options", [{"batch_size": 8}, {"max_tokens": 160}])
def test_resume_mid_epoch_gives_the_remaining_batches(
    options, duplicated_dir, tiny_tokenizer_dir, datasets_cache
):
    datamodule = pair_module(duplicated_dir, tiny_tokenizer_dir, datasets_cache, **options)
    loader = datamodule.train_dataloader()
    loader.sampler.set_epoch(1)
    full = list(loader)
    datamodule.load_state_dict({"train_epoch": 1, "train_batches_done": 3})
    resumed_loader = datamodule.train_dataloader()
    resumed_loader.sampler.set_epoch(1)
    resumed = list(resumed_loader)
    assert len(resumed) == len(full) - 3
    for left, right in zip(resumed, full[3:], strict=True):
        assert all(torch.equal(left[key], right[key]) for key in left)


# --------------------------------------------------------------------------------------------------------
# The sampler alone.


def test_same_batch_count_every_epoch_and_new_batches():
    texts = np.array([[row // 4, 1000 + row] for row in range(200)])
    lengths = np.array([[4 + row % 9, 10 + row % 23] for row in range(200)])
    sampler = UniqueTextBatchSampler(
        texts, lengths, batch_size=8, seed=3, max_tokens=400, pad_to_multiple_of=8
    )
    epochs = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        epochs.append(list(sampler))
    assert len({len(batches) for batches in epochs}) == 1 == len({len(sampler)})
    assert epochs[0] != epochs[1]
    sampler.set_epoch(1)
    assert list(sampler) == epochs[1]


def test_a_text_in_more_rows_than_batches_is_left_out_with_a_warning():
    texts = np.array([[0 if row < 6 else row, 100 + row] for row in range(12)])  # one anchor in six rows
    sampler = UniqueTextBatchSampler(texts, np.ones((12, 2), int), batch_size=4, seed=0)
    with pytest.warns(UserWarning, match="3 training rows repeat a text of every batch"):
        batches = list(sampler)
    assert len(batches) == 3 and sampler.left_out == 3
    assert all(sum(texts[row][0] == 0 for row in batch) <= 1 for batch in batches)
