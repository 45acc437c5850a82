"""NeoBERT model classes, registered with the transformers Auto classes for ``model_type="neobert"``.

After ``import neobert_tasks``, ``AutoModel.from_pretrained(<official checkpoint directory>)`` builds
these classes with no ``trust_remote_code``: transformers prefers a registered local class over the
``auto_map`` remote code named in the official ``config.json``.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from neobert_tasks.model.attention import ATTENTION_BACKENDS
from neobert_tasks.model.configuration import NeoBERTConfig
from neobert_tasks.model.heads import (
    NeoBERTForMaskedLM,
    NeoBERTForQuestionAnswering,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
)
from neobert_tasks.model.modeling import NeoBERTModel, NeoBERTPreTrainedModel

__all__ = [
    "ATTENTION_BACKENDS",
    "AUTO_CLASSES",
    "NeoBERTConfig",
    "NeoBERTForMaskedLM",
    "NeoBERTForQuestionAnswering",
    "NeoBERTForSequenceClassification",
    "NeoBERTForTokenClassification",
    "NeoBERTModel",
    "NeoBERTPreTrainedModel",
]

# Auto class → the class it builds for model_type "neobert": registered below, and the one table of classes
# the export reads (the remote code's auto_map, the model card, the architectures it re-exports).
AUTO_CLASSES = {
    AutoModel: NeoBERTModel,
    AutoModelForMaskedLM: NeoBERTForMaskedLM,
    AutoModelForSequenceClassification: NeoBERTForSequenceClassification,
    AutoModelForTokenClassification: NeoBERTForTokenClassification,
    AutoModelForQuestionAnswering: NeoBERTForQuestionAnswering,
}

AutoConfig.register("neobert", NeoBERTConfig, exist_ok=True)
for _auto_class, _model_class in AUTO_CLASSES.items():
    _auto_class.register(NeoBERTConfig, _model_class, exist_ok=True)
