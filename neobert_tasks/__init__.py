"""neobert_tasks: fine-tune NeoBERT for classification, NER, QA, long documents and MLM with Lightning."""

from neobert_tasks.model import (
    NeoBERTConfig,
    NeoBERTForMaskedLM,
    NeoBERTForQuestionAnswering,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
)

__version__ = "0.1.0"

__all__ = [
    "NeoBERTConfig",
    "NeoBERTForMaskedLM",
    "NeoBERTForQuestionAnswering",
    "NeoBERTForSequenceClassification",
    "NeoBERTForTokenClassification",
    "NeoBERTModel",
    "__version__",
]
