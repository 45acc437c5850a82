"""Long documents: windowing (chunk, head, head+tail), document-level batches and per-document pooling.

The windowing helpers are checked on token id lists made by hand; the datamodule on tiny split files
written with the tiny tokenizer (one token per word), so nothing here needs `../shared`.
"""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.data.long_document import (
    LongDocumentDataModule,
    document_windows,
    head_tail_tokens,
    window_starts,
)
from neobert_tasks.data.sources import DataError
from neobert_tasks.tasks.long_document import LongDocumentClassificationTask, pool_window_logits
from tests.conftest import tiny_config_kwargs


@pytest.mark.parametrize(
    ("num_tokens", "body", "stride"), [(100, 30, 10), (30, 30, 5), (7, 30, 5), (61, 20, 0)]
)
def test_chunk_windows_cover_every_token_with_stride_overlap(num_tokens, body, stride):
    tokens = list(range(num_tokens))
    windows = document_windows(tokens, "chunk", body, stride, head_tokens=0)
    assert all(len(window) <= body for window in windows)
    assert windows[0][0] == 0 and windows[-1][-1] == num_tokens - 1
    assert sorted(set().union(*windows)) == tokens  # nothing is lost
    for previous, following in zip(windows, windows[1:], strict=False):
        assert len(previous) == body  # only the last window may be short
        assert following[0] == previous[-1] - stride + 1  # consecutive windows share exactly `stride` tokens
    assert len(windows) == len(window_starts(num_tokens, body, stride))


def test_truncate_keeps_the_head():
    assert document_windows(list(range(100)), "truncate", 30, 10, 0) == [list(range(30))]
    assert document_windows(list(range(12)), "truncate", 30, 10, 0) == [list(range(12))]


@pytest.mark.parametrize(("head", "expected"), [
    (10, list(range(10)) + list(range(80, 100))),
    (0, list(range(70, 100))),
    (30, list(range(30))),
])  # fmt: skip
def test_head_tail_keeps_first_and_last_tokens(head, expected):
    assert head_tail_tokens(list(range(100)), 30, head) == expected
    assert document_windows(list(range(100)), "head_tail", 30, 0, head) == [expected]
    assert head_tail_tokens(list(range(25)), 30, head) == list(range(25))  # short documents stay whole


# Words of the tiny tokenizer's vocabulary (tests/data/conftest.py), one token each.
WORDS = ("the", "a", "movie", "film", "was", "is", "good", "bad", "great", "awful", "plot", "actors", "story")


def long_text(num_words: int, offset: int = 0) -> str:
    return " ".join(WORDS[(offset + position) % len(WORDS)] for position in range(num_words))


@pytest.fixture
def document_dir(write_split):
    """Six labelled documents of 3 to 95 words (one token each), with titles, in train and validation."""
    lengths = [95, 3, 40, 12, 70, 18]
    columns = {
        "title": [f"story {index}" for index in range(len(lengths))],
        "text": [long_text(length, index) for index, length in enumerate(lengths)],
        "label": [index % 2 for index in range(len(lengths))],
    }
    write_split("train", **columns)
    return write_split("validation", **columns).parent


def datamodule(tiny_tokenizer_dir, document_dir, tmp_path, **overrides) -> LongDocumentDataModule:
    arguments = dict(
        tokenizer=tiny_tokenizer_dir, data_dir=str(document_dir), test_split=None, max_length=16, stride=4,
        batch_size=2, pad_to_multiple_of=None, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    arguments.update(overrides)
    module = LongDocumentDataModule(**arguments)
    module.setup("fit")
    return module


def test_chunked_document_windows_carry_special_tokens(tiny_tokenizer_dir, document_dir, tmp_path):
    module = datamodule(tiny_tokenizer_dir, document_dir, tmp_path, title_column="title")
    tokenizer = module.tokenizer
    first = module.datasets["validation"][0]
    tokens = tokenizer(f"story 0\n\n{long_text(95)}", add_special_tokens=False)["input_ids"]
    body = 14  # max_length 16 minus [CLS] and [SEP]
    assert first["input_ids"] == [
        [tokenizer.cls_token_id, *window, tokenizer.sep_token_id]
        for window in document_windows(tokens, "chunk", body, 4, 0)
    ]
    assert len(first["input_ids"]) == len(window_starts(len(tokens), body, 4)) > 1
    assert first["example_index"] == 0 and first["labels"] == 0


def test_batches_hold_whole_documents(tiny_tokenizer_dir, document_dir, tmp_path):
    module = datamodule(tiny_tokenizer_dir, document_dir, tmp_path)
    windows_per_document = [len(row) for row in module.datasets["validation"]["input_ids"]]
    seen = []
    for batch in module.val_dataloader():
        documents = batch["example_index"].tolist()
        counts = torch.bincount(batch["example_position"], minlength=len(documents)).tolist()
        assert counts == [windows_per_document[index] for index in documents]  # no document is split
        assert batch["example_position"].tolist() == sorted(batch["example_position"].tolist())
        assert batch["input_ids"].shape[0] >= len(documents) == batch["labels"].shape[0]
        seen += documents
    assert sorted(seen) == list(range(6))
    training = [batch for batch in module.train_dataloader()]
    assert sum(batch["labels"].shape[0] for batch in training) == 6
    assert sum(batch["input_ids"].shape[0] for batch in training) == sum(windows_per_document)


@pytest.mark.filterwarnings("ignore:3 training examples have more tokens than data.init_args.max_tokens")
def test_token_budget_counts_windows_and_keeps_documents_whole(tiny_tokenizer_dir, document_dir, tmp_path):
    module = datamodule(tiny_tokenizer_dir, document_dir, tmp_path, max_tokens=48)
    windows = [len(row) for row in module.datasets["train"]["input_ids"]]
    longest = [max(len(window) for window in row) for row in module.datasets["train"]["input_ids"]]
    # A document of several windows costs windows × max_length; one of a single window, its length.
    assert module.token_budget_lengths("train") == [
        count * (16 if count > 1 else length) for count, length in zip(windows, longest, strict=True)
    ]
    training = list(module.train_dataloader())
    assert sum(batch["labels"].shape[0] for batch in training) == 6
    assert sum(batch["input_ids"].shape[0] for batch in training) == sum(windows)
    for batch in training:  # within budget, unless one document alone is over it
        assert batch["input_ids"].numel() <= 48 or batch["labels"].shape[0] == 1


def test_head_tail_datamodule_gives_one_window_per_document(tiny_tokenizer_dir, document_dir, tmp_path):
    module = datamodule(tiny_tokenizer_dir, document_dir, tmp_path, overflow="head_tail", head_tokens=4)
    rows = module.datasets["validation"]["input_ids"]
    assert all(len(windows) == 1 and len(windows[0]) <= 16 for windows in rows)
    tokens = module.tokenizer(long_text(95), add_special_tokens=False)["input_ids"]
    assert rows[0][0][1:-1] == tokens[:4] + tokens[-10:]


def test_a_missing_title_column_says_how_to_go_without(tiny_tokenizer_dir, write_split, tmp_path):
    """The config names a 'title' column that many document collections lack."""
    folder = write_split("train", text=["one two three"] * 2, label=[0, 1]).parent
    write_split("validation", text=["one two"] * 2, label=[0, 1])
    with pytest.raises(DataError, match=r"Column 'title' \(data.init_args.title_column\) is missing from .*"
                       r"set data.init_args.title_column to null for documents without titles"):  # fmt: skip
        datamodule(tiny_tokenizer_dir, folder, tmp_path, title_column="title")


def test_bad_windowing_settings_are_refused(tiny_tokenizer_dir, document_dir, tmp_path):
    with pytest.raises(DataError, match="overflow"):
        datamodule(tiny_tokenizer_dir, document_dir, tmp_path, overflow="sliding")
    with pytest.raises(DataError, match="stride"):
        datamodule(tiny_tokenizer_dir, document_dir, tmp_path, stride=14)


def test_pooling_per_document():
    logits = torch.tensor([[1.0, 0.0], [3.0, -2.0], [5.0, 5.0], [0.0, 1.0], [2.0, 4.0]])
    example_position = torch.tensor([0, 0, 1, 2, 2])
    mean = pool_window_logits(logits, example_position, 3, "mean")
    assert torch.equal(mean, torch.tensor([[2.0, -1.0], [5.0, 5.0], [1.0, 2.5]]))
    maximum = pool_window_logits(logits, example_position, 3, "max")
    assert torch.equal(maximum, torch.tensor([[3.0, 0.0], [5.0, 5.0], [2.0, 4.0]]))
    with pytest.raises(ValueError, match="pooling"):
        pool_window_logits(logits, example_position, 3, "sum")


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_task_trains_on_pooled_document_logits(pooling):
    torch.manual_seed(0)
    task = LongDocumentClassificationTask(
        num_labels=2, label_names=["no", "yes"], pooling=pooling, pretrained=None,
        model_config=tiny_config_kwargs(), gradient_checkpointing=True,
    )  # fmt: skip
    batch = {
        "input_ids": torch.randint(5, 100, (5, 12)),
        "attention_mask": torch.ones(5, 12, dtype=torch.long),
        "example_position": torch.tensor([0, 0, 0, 1, 1]),
        "labels": torch.tensor([1, 0]),
    }
    logits = task.document_logits(batch)
    assert logits.shape == (2, 2)
    loss = task.document_loss(logits, batch["labels"])
    loss.backward()
    assert all(parameter.grad is not None for parameter in task.model.parameters() if parameter.requires_grad)


def test_a_document_without_a_title_is_its_text_alone(tiny_tokenizer_dir, write_split, tmp_path):
    """A null title was refused for the whole file, without a row; an empty one is no title either."""
    columns = {
        "title": ["story 0", None, ""],
        "text": [long_text(12, index) for index in range(3)],
        "label": [0, 1, 0],
    }
    write_split("train", **columns)
    folder = write_split("validation", **columns).parent
    module = datamodule(tiny_tokenizer_dir, folder, tmp_path, title_column="title")
    tokenizer = module.tokenizer
    for index, prefix in ((0, "story 0\n\n"), (1, ""), (2, "")):
        tokens = tokenizer(prefix + long_text(12, index), add_special_tokens=False)["input_ids"]
        windows = module.datasets["validation"][index]["input_ids"]
        assert [token for window in windows for token in window[1:-1]][: len(tokens)] == tokens


def test_a_headline_without_a_body_is_its_title_alone_and_neither_is_skipped(
    tiny_tokenizer_dir, write_split, tmp_path
):
    """A titled document with an empty or null body was skipped: its prediction went missing."""
    columns = {
        "title": ["story 0", "story 1", None, "story 3"],
        "text": [long_text(12, 0), "", None, None],
        "label": [0, 1, 0, 1],
    }
    write_split("train", **columns)
    folder = write_split("validation", **columns).parent
    with pytest.warns(UserWarning, match=r"Skipped 1 of 4 rows .* column\(s\) text and title"):
        module = datamodule(tiny_tokenizer_dir, folder, tmp_path, title_column="title")
    tokenizer = module.tokenizer
    validation = module.datasets["validation"]
    assert len(validation) == 3  # the row with neither is the one skipped
    for row, title in ((1, "story 1"), (2, "story 3")):
        tokens = tokenizer(title, add_special_tokens=False)["input_ids"]
        assert [token for window in validation[row]["input_ids"] for token in window[1:-1]] == tokens


def test_a_predict_file_may_leave_titles_out_as_the_splits_may(tiny_tokenizer_dir, document_dir, tmp_path):
    """A CSV predict file with an empty title cell (null) was refused; the same row in a split is not."""
    texts = tmp_path / "documents.csv"
    texts.write_text(f"title,text\n,{long_text(20)}\nstory 9,{long_text(5)}\n")
    module = datamodule(
        tiny_tokenizer_dir, document_dir, tmp_path, title_column="title", predict_file=str(texts)
    )
    module.setup("predict")
    assert len(module.datasets["predict"]) == 2
