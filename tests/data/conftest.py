"""Fixtures for the data tests: the shared GLUE copy, a tiny self-made tokenizer and tiny split files.

Tests that need `../shared` skip when it is absent; the tiny tokenizer and datasets are built in temporary
directories so that the rest of the suite runs anywhere, offline.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

# The hub is unreachable in the project; make every datasets/transformers call fail fast instead of retrying.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SHARED_DIR = (Path(__file__).resolve().parents[2] / ".." / "shared").resolve()

# The tiny tokenizer's vocabulary; texts written by the tests use these words only.
TINY_TEXT = (
    "the a movie film was is good bad great awful plot actors story boring fun i liked hated it and"
    " but not very really cat dog sat on mat question answer yes no"
)
TINY_WORDS = tuple(TINY_TEXT.split())


def require_shared(*parts: str) -> Path:
    """A path under ../shared; the calling test is skipped with a reason when it does not exist."""
    path = SHARED_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared benchmark data exists only on the project's machines")
    return path


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """Root of the shared GLUE copy (one sub-directory per task)."""
    return require_shared("data", "glue")


@pytest.fixture(scope="session")
def bert_tokenizer_dir() -> str:
    """The shared bert-base-uncased tokenizer directory."""
    return str(require_shared("tokenizers", "bert-base-uncased"))


@pytest.fixture(scope="session")
def datasets_cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A datasets cache private to this test session, so runs neither reuse nor pollute ~/.cache."""
    return str(tmp_path_factory.mktemp("hf_datasets_cache"))


def save_wordpiece_tokenizer(words: list[str], directory: Path, **options) -> str:
    """Save a lowercase BERT-style WordPiece tokenizer over ``words`` (``##`` pieces allowed) and the five
    special tokens into ``directory``, like a hub tokenizer; ``options`` go to the tokenizer."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocabulary = {token: index for index, token in enumerate([*special, *words])}
    backend = Tokenizer(models.WordPiece(vocabulary, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocabulary["[CLS]"]), ("[SEP]", vocabulary["[SEP]"])],
    )
    names = {f"{name}_token": f"[{name.upper()}]" for name in ("pad", "unk", "cls", "sep", "mask")}
    PreTrainedTokenizerFast(tokenizer_object=backend, **names, **options).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A lowercase WordPiece tokenizer over a few dozen words, saved like a hub tokenizer."""
    words = [*TINY_WORDS, ".", ",", "!", "?"]
    return save_wordpiece_tokenizer(words, tmp_path_factory.mktemp("tiny_tokenizer"), model_max_length=512)


@pytest.fixture(scope="session")
def wordpiece_tokenizer() -> Callable[..., str]:
    """`save_wordpiece_tokenizer`, for tests with a vocabulary of their own."""
    return save_wordpiece_tokenizer


@pytest.fixture
def tokenizer_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[object], list[int]]:
    """Count the calls of a tokenizer's class from now on: returns the list that grows by one per call.

    Patched on the class, so the tokenizer instance (and with it a datasets cache fingerprint) is unchanged.
    """

    def count(tokenizer: object) -> list[int]:
        tokenizer_class = type(tokenizer)
        original_call = tokenizer_class.__call__
        calls: list[int] = []

        def counting_call(self, *args, **kwargs):
            calls.append(1)
            return original_call(self, *args, **kwargs)

        monkeypatch.setattr(tokenizer_class, "__call__", counting_call)
        return calls

    return count


def tiny_sentences(count: int, offset: int = 0) -> list[str]:
    """`count` deterministic sentences of 2 to 18 words built from the tiny vocabulary."""
    return [
        " ".join(TINY_WORDS[(row + offset + position) % len(TINY_WORDS)] for position in range(2 + row % 17))
        for row in range(count)
    ]


@pytest.fixture(scope="session")
def sentences() -> Callable[..., list[str]]:
    """The `tiny_sentences` generator, for tests (conftest modules are not importable)."""
    return tiny_sentences


def write_frame(frame: pd.DataFrame, path: Path) -> Path:
    """Write `frame` in the format named by the suffix of `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    elif path.suffix in (".csv", ".tsv"):
        frame.to_csv(path, index=False, sep="\t" if path.suffix == ".tsv" else ",")
    elif path.suffix in (".json", ".jsonl"):
        frame.to_json(path, orient="records", lines=True)
    else:
        raise ValueError(f"Unsupported suffix {path.suffix}")
    return path


@pytest.fixture
def write_split(tmp_path: Path) -> Callable[..., Path]:
    """Write one split file `<tmp>/data/<split><suffix>` from column lists; returns the file path."""

    def write(split: str, suffix: str = ".parquet", directory: Path | None = None, **columns: list) -> Path:
        return write_frame(pd.DataFrame(columns), (directory or tmp_path / "data") / f"{split}{suffix}")

    return write
