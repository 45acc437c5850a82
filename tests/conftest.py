"""Shared test fixtures: the ``../shared`` data folder, tiny NeoBERT configs, offline mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing in the test suite may reach the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = (REPO_ROOT / ".." / "shared").resolve()


def shared_path(*parts: str) -> Path:
    """A path under ``../shared``, skipping the test with a reason when it is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared benchmark data only exists on the project's machines")
    return path


def tiny_config_kwargs(**overrides) -> dict:
    """Keyword arguments of a 2-layer, 64-wide NeoBERT with the real vocabulary size."""
    kwargs = dict(
        vocab_size=30522,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=96,
        max_length=512,
    )
    kwargs.update(overrides)
    return kwargs


@pytest.fixture
def tokenizer_path() -> Path:
    """The real bert-base-uncased tokenizer from ``../shared``."""
    return shared_path("tokenizers", "bert-base-uncased")
