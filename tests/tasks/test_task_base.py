"""The shared task base: a model loaded from a checkpoint directory starts fine-tuning in training mode."""

from __future__ import annotations

from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification
from neobert_tasks.tasks import SequenceClassificationTask
from tests.conftest import tiny_config_kwargs


def test_pretrained_model_trains_with_dropout_on(tmp_path):
    # from_pretrained returns eval mode; left so, dropout would silently be off during fine-tuning.
    model = NeoBERTForSequenceClassification(NeoBERTConfig(**tiny_config_kwargs(), num_labels=2))
    model.save_pretrained(tmp_path)
    task = SequenceClassificationTask(pretrained=str(tmp_path), num_labels=2)
    assert all(module.training for module in task.modules())
