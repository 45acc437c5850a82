"""Packing of raw text into full rows, unpacked rows, local text files and tokenizer training."""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.data import DataError
from neobert_tasks.data.text import TextDataModule
from neobert_tasks.data.text_encoding import pack_documents, split_documents, train_wordpiece_tokenizer
from neobert_tasks.data.text_sources import load_text_directory
from neobert_tasks.model import NeoBERTConfig, NeoBERTModel
from tests.conftest import tiny_config_kwargs

DOCUMENTS = [
    "the quick brown fox jumps over the lazy dog " * (count % 7 + 1) + f"document {count}"
    for count in range(40)
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A small WordPiece tokenizer trained from scratch on the test documents."""
    return train_wordpiece_tokenizer(DOCUMENTS * 5, 200, tmp_path_factory.mktemp("tokenizer"))


def test_trained_tokenizer_works(tokenizer):
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(5)] == [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
    ]
    ids = tokenizer("The quick fox")["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the quick fox"


def test_packed_rows_are_full_and_lose_nothing(tokenizer):
    packed = pack_documents({"text": DOCUMENTS}, tokenizer=tokenizer, text_column="text", max_length=32)
    rows, positions = packed["input_ids"], packed["position_ids"]
    assert all(len(row) == 32 for row in rows[:-1]) and 0 < len(rows[-1]) <= 32
    expected = [token for text in DOCUMENTS for token in tokenizer(text)["input_ids"]]
    assert [token for row in rows for token in row] == expected  # every token once, in order
    for row, row_positions in zip(rows, positions, strict=True):
        assert row_positions[0] == 0 and max(row_positions) < 32
        for index, token in enumerate(row):  # a document start is a position 0 (not only at row starts)
            if token == tokenizer.cls_token_id:
                assert row_positions[index] == 0


def test_unpacked_rows_split_long_documents(tokenizer):
    split = split_documents({"text": DOCUMENTS}, tokenizer=tokenizer, text_column="text", max_length=16)
    assert all(len(row) <= 16 and row[0] == tokenizer.cls_token_id for row in split["input_ids"])
    assert len(split["input_ids"]) > len(DOCUMENTS)


def test_packed_documents_encode_as_alone(tokenizer):
    torch.manual_seed(0)
    model = NeoBERTModel(NeoBERTConfig(**tiny_config_kwargs(vocab_size=len(tokenizer)))).eval()
    packed = pack_documents({"text": DOCUMENTS[:6]}, tokenizer=tokenizer, text_column="text", max_length=128)
    row, positions = torch.tensor(packed["input_ids"][:1]), torch.tensor(packed["position_ids"][:1])
    with torch.no_grad():
        together = model(input_ids=row, position_ids=positions).last_hidden_state[0]
        starts = [index for index, value in enumerate(positions[0].tolist()) if value == 0] + [row.shape[1]]
        for start, end in zip(starts[:-1], starts[1:], strict=False):
            alone = model(input_ids=row[:, start:end]).last_hidden_state[0]
            torch.testing.assert_close(together[start:end], alone, atol=1e-5, rtol=1e-5)


def test_datamodule_on_local_text(tokenizer, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("\n".join(DOCUMENTS) + "\n\n")
    module = TextDataModule(
        tokenizer=str(tmp_path / "new_tokenizer"), data_dir=str(data), max_length=32, batch_size=4,
        validation_fraction=0.25, tokenizer_vocab_size=200, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    assert module.vocab_size <= 200 and (tmp_path / "new_tokenizer" / "tokenizer.json").exists()
    assert module.mask_token_id == 4 and module.special_token_ids == [0, 1, 2, 3, 4]
    module.prepare_data()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32) and set(batch) == {
        "input_ids",
        "attention_mask",
        "position_ids",
    }
    validation = sum(len(row["input_ids"]) for row in module.datasets["validation"])
    train = sum(len(row["input_ids"]) for row in module.datasets["train"])
    assert train + validation == sum(len(module.tokenizer(text)["input_ids"]) for text in DOCUMENTS)


def test_token_budget_on_unpacked_rows_and_refused_for_streams(tokenizer, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.txt").write_text("\n".join(DOCUMENTS) + "\n")
    (data / "validation.txt").write_text("\n".join(DOCUMENTS[:2]) + "\n")
    module = TextDataModule(
        tokenizer=str(tmp_path / "new_tokenizer"), data_dir=str(data), max_length=32, packing=False,
        tokenizer_vocab_size=200, cache_dir=str(tmp_path / "cache"), max_tokens=64,
    )  # fmt: skip
    module.prepare_data()
    module.setup("fit")
    batches = list(module.train_dataloader())
    assert all(batch["input_ids"].numel() <= 64 for batch in batches)
    rows = sum(batch["input_ids"].shape[0] for batch in batches)
    assert rows == len(module.datasets["train"]) and set(batches[0]) == {"input_ids", "attention_mask"}
    with pytest.raises(DataError, match="data.init_args.max_tokens needs an indexed dataset"):
        TextDataModule(tokenizer=str(tmp_path / "new_tokenizer"), dataset="some/hub", streaming=True,
                       max_tokens=64)  # fmt: skip


def test_streaming_packs_on_the_fly(tokenizer, tmp_path):
    """``streaming: true`` packs an IterableDataset; a local folder stands in for a hub id."""
    data = tmp_path / "stream"
    data.mkdir()
    (data / "train.txt").write_text("\n".join(DOCUMENTS * 30) + "\n")
    tokenizer_dir = tmp_path / "saved_tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    module = TextDataModule(
        tokenizer=str(tokenizer_dir), dataset=str(data), streaming=True, max_length=32, batch_size=4,
        cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["input_ids"].shape == (4, 32) and (batch["attention_mask"] == 1).all()
    validation = next(iter(module.val_dataloader()))
    assert validation["position_ids"].shape[1] == 32


@pytest.mark.parametrize(("content", "problem"), [("", "is empty (0 bytes)."), ("\n   \n\n", "has no rows.")])
def test_a_text_split_without_documents_is_named(tmp_path, content, problem):
    """The text builder failed on an empty file with datasets' SchemaInferenceError, naming no file."""
    (tmp_path / "train.txt").write_text("one document\n")
    (tmp_path / "validation.txt").write_text(content)
    with pytest.raises(DataError) as refusal:
        load_text_directory(tmp_path, ["train", "validation"], str(tmp_path / "cache"))
    assert str(refusal.value) == f"Split 'validation' file '{tmp_path / 'validation.txt'}' {problem}"


def test_predict_without_a_predict_file_is_refused_in_one_sentence(tmp_path):
    """Packed splits hold no [MASK] to fill in, nor the example index predictions are written by: predict
    without a predict file failed with a KeyError deep in predict_step."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "validation.txt").write_text("\n".join(DOCUMENTS) + "\n")
    module = TextDataModule(tokenizer=str(tmp_path / "new_tokenizer"), data_dir=str(data), max_length=32)
    with pytest.raises(DataError, match=r"^MLM predict fills in the \[MASK\] tokens of the texts in data"):
        module.setup("predict")


def test_a_mask_past_max_length_in_a_predict_file_is_warned_of(tmp_path, bert_tokenizer_dir):
    """Texts are cut at max_length tokens: a [MASK] behind the cut got no prediction, without a word."""
    texts = tmp_path / "texts.txt"
    texts.write_text("the [MASK] sat on the mat\n" + "word " * 40 + "the end is [MASK] here\n")
    options = {"predict_file": str(texts), "max_length": 16, "cache_dir": str(tmp_path / "cache")}
    module = TextDataModule(tokenizer=bert_tokenizer_dir, **options)
    with pytest.warns(UserWarning, match=r"^1 of 2 texts of predict file .* have a \[MASK\] token past"):
        module.setup("predict")


def test_a_missing_tokenizer_is_trained_only_for_a_model_trained_from_scratch(tmp_path):
    """A misspelt tokenizer path trained a new WordPiece tokenizer for a pretrained model, silently."""
    from jsonargparse import Namespace

    from neobert_tasks.data.text import check_tokenizer_to_train  # noqa: PLC0415

    def config(tokenizer, pretrained, model_config=None, train_tokenizer=True):
        data = Namespace(tokenizer=tokenizer, train_tokenizer=train_tokenizer)
        model = Namespace(pretrained=pretrained, model_config=model_config)
        return Namespace(data=Namespace(init_args=data), model=Namespace(init_args=model))

    typo = str(tmp_path / "bert-base-uncase")
    with pytest.raises(
        DataError, match=r"Tokenizer '.*bert-base-uncase' does not exist, and .*pretrained 'runs/x"
    ):
        check_tokenizer_to_train(config(typo, "runs/x/export"))
    assert not (tmp_path / "bert-base-uncase").exists()
    check_tokenizer_to_train(config(typo, None, {"hidden_size": 64}))  # from scratch: trained, as documented
    check_tokenizer_to_train(config("chandar-lab/NeoBERT", "chandar-lab/NeoBERT"))  # a hub id
    check_tokenizer_to_train(
        config(typo, "runs/x/export", train_tokenizer=False)
    )  # refused later, as missing
