"""Datamodules, samplers and data loading helpers for NeoBERT fine-tuning tasks."""

from neobert_tasks.data.base import TokenizedDataModule
from neobert_tasks.data.collator import ModelInputCollator, TokenClassificationCollator
from neobert_tasks.data.glue import GLUE_TASKS, GLUEDataModule, GLUETask
from neobert_tasks.data.labels import LabelSchema
from neobert_tasks.data.long_document import DocumentWindowCollator, LongDocumentDataModule
from neobert_tasks.data.pairs import PairDataModule
from neobert_tasks.data.question_answering import QuestionAnsweringDataModule
from neobert_tasks.data.sampler import LengthGroupedSampler, TrainingSampler
from neobert_tasks.data.sources import (
    DataError,
    MissingDataError,
    find_split_files,
    load_hub_splits,
    load_local_splits,
)
from neobert_tasks.data.text import TextDataModule
from neobert_tasks.data.text_classification import TextClassificationDataModule
from neobert_tasks.data.text_encoding import PackedCollator, train_wordpiece_tokenizer
from neobert_tasks.data.token_budget import TokenBudgetSampler
from neobert_tasks.data.token_classification import TokenClassificationDataModule
from neobert_tasks.data.tokenizer import load_tokenizer
from neobert_tasks.data.unique_batches import UniqueTextBatchSampler

__all__ = [
    "GLUE_TASKS",
    "DataError",
    "DocumentWindowCollator",
    "GLUEDataModule",
    "GLUETask",
    "LabelSchema",
    "LengthGroupedSampler",
    "TrainingSampler",
    "LongDocumentDataModule",
    "MissingDataError",
    "ModelInputCollator",
    "PackedCollator",
    "PairDataModule",
    "QuestionAnsweringDataModule",
    "TextClassificationDataModule",
    "TextDataModule",
    "TokenBudgetSampler",
    "TokenClassificationCollator",
    "TokenClassificationDataModule",
    "TokenizedDataModule",
    "UniqueTextBatchSampler",
    "find_split_files",
    "load_hub_splits",
    "load_local_splits",
    "load_tokenizer",
    "train_wordpiece_tokenizer",
]
