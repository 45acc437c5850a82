"""Texts cut into overlapping windows keep every token: the installed tokenizers does so, and a release
known to lose the end of long texts (tokenizers 0.23.1 and 0.23.2) is refused in one sentence wherever
windows are cut (question answering, NER, MLM documents) instead of silently training on truncated data.
"""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

import neobert_tasks.data.tokenizer as tokenizer_module
from neobert_tasks.data import DataError, QuestionAnsweringDataModule
from neobert_tasks.data.text_encoding import split_documents
from neobert_tasks.data.token_alignment import tokenize_in_windows

TEXT = "the a movie film was is good bad great awful plot actors story boring fun i liked hated cat dog"
WORDS = TEXT.split(" ")
REFUSAL = r"^tokenizers 0\.23\.2 loses the end of texts cut into overlapping windows \(fixed in 0\.23\.3\)"


@pytest.mark.parametrize("stride", [0, 4])
def test_windows_of_a_question_and_a_long_context_reach_its_last_token(bert_tokenizer_dir, stride):
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    encoded = tokenizer(
        ["which word ?"], [" ".join(WORDS)], truncation="only_second", max_length=12, stride=stride,
        return_overflowing_tokens=True,
    )  # fmt: skip
    context_tokens = [
        tokenizer.convert_ids_to_tokens(ids)[5:-1] for ids in encoded["input_ids"]
    ]  # after "[CLS] which word ? [SEP]"
    assert context_tokens[0][0] == "the" and context_tokens[-1][-1] == "dog"
    covered = {token for window in context_tokens for token in window}
    assert covered == set(WORDS)
    # Each window after the first starts `stride` tokens before the previous one ended.
    for previous, window in zip(context_tokens, context_tokens[1:], strict=False):
        assert window[:stride] == (previous[-stride:] if stride else [])


@pytest.fixture
def broken_tokenizers(monkeypatch):
    monkeypatch.setattr(tokenizer_module, "tokenizers_version", lambda: "0.23.2")


def test_a_release_that_loses_window_ends_is_refused_where_texts_are_cut(
    broken_tokenizers, bert_tokenizer_dir
):
    tokenizer = AutoTokenizer.from_pretrained(bert_tokenizer_dir)
    with pytest.raises(DataError, match=REFUSAL):
        split_documents({"text": [" ".join(WORDS)]}, tokenizer=tokenizer, text_column="text", max_length=8)
    with pytest.raises(DataError, match=REFUSAL):
        tokenize_in_windows(tokenizer, [WORDS], max_length=8, stride=2)


def test_question_answering_setup_names_the_broken_release(
    broken_tokenizers, write_split, tiny_tokenizer_dir, datasets_cache
):
    context = " ".join(WORDS)
    path = write_split(
        "validation", ".parquet", None, id=["q1"], title=["t"], context=[context], question=["which word ?"],
        answers=[{"text": ["dog"], "answer_start": [context.index("dog")]}],
    )  # fmt: skip
    datamodule = QuestionAnsweringDataModule(
        tokenizer=tiny_tokenizer_dir, data_dir=str(path.parent), cache_dir=datasets_cache
    )
    with pytest.raises(DataError, match=REFUSAL):
        datamodule.setup("validate")
