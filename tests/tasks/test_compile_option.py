"""``model.init_args.compile: true`` compiles the backbone's blocks (the compiled path is tested in
tests/model/test_fast_paths.py)."""

from __future__ import annotations

import pytest

from neobert_tasks.tasks import (
    LongDocumentClassificationTask,
    MaskedLanguageModelingTask,
    QuestionAnsweringTask,
    SequenceClassificationTask,
    TokenClassificationTask,
)
from tests.conftest import tiny_config_kwargs


def test_compile_option_compiles_every_block_and_is_off_by_default():
    arguments = dict(num_labels=2, pretrained=None, model_config=tiny_config_kwargs())
    assert not SequenceClassificationTask(**arguments).model.model.blocks_compiled
    task = SequenceClassificationTask(**arguments, compile=True)
    assert task.model.model.blocks_compiled and task.hparams.compile
    assert all(hasattr(block, "_compiled_call_impl") for block in task.model.model.transformer_encoder)


@pytest.mark.parametrize(
    ("task_class", "arguments"),
    [
        (TokenClassificationTask, {"num_labels": 3, "label_names": ["O", "B-PER", "I-PER"]}),
        (QuestionAnsweringTask, {}),
        (MaskedLanguageModelingTask, {}),
        (LongDocumentClassificationTask, {"num_labels": 2}),
    ],
)
def test_every_task_takes_the_compile_option(task_class, arguments):
    task = task_class(**arguments, pretrained=None, model_config=tiny_config_kwargs(), compile=True)
    assert task.hparams.compile and task.model.base_model.blocks_compiled
    assert not task_class(**arguments, pretrained=None, model_config=tiny_config_kwargs()).hparams.compile
