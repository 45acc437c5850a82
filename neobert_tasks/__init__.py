"""neobert_tasks: fine-tune NeoBERT for classification, NER, QA, long documents and MLM with Lightning."""

from neobert_tasks import model
from neobert_tasks.model import *  # noqa: F403 - the model classes, registered with the Auto classes

__version__ = "0.1.0"

__all__ = ["__version__", *model.__all__]
