"""LightningModules, one per task, over the shared ``NeoBERTTask`` base."""

from neobert_tasks.tasks.base import NeoBERTTask
from neobert_tasks.tasks.embedding import EmbeddingTask
from neobert_tasks.tasks.long_document import LongDocumentClassificationTask
from neobert_tasks.tasks.masked_language_modeling import MaskedLanguageModelingTask
from neobert_tasks.tasks.question_answering import QuestionAnsweringTask
from neobert_tasks.tasks.sequence_classification import SequenceClassificationTask
from neobert_tasks.tasks.token_classification import TokenClassificationTask

__all__ = [
    "EmbeddingTask",
    "LongDocumentClassificationTask",
    "MaskedLanguageModelingTask",
    "NeoBERTTask",
    "QuestionAnsweringTask",
    "SequenceClassificationTask",
    "TokenClassificationTask",
]
