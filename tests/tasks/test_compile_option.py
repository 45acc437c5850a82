"""``model.init_args.compile: true`` compiles the backbone's blocks when ``fit`` sets the task up, and only
then (the compiled path is tested in tests/model/test_fast_paths.py)."""

from __future__ import annotations

import pytest

from neobert_tasks.tasks import (
    LongDocumentClassificationTask,
    MaskedLanguageModelingTask,
    NeoBERTTask,
    QuestionAnsweringTask,
    SequenceClassificationTask,
    TokenClassificationTask,
)
from tests.conftest import tiny_config_kwargs


def test_compile_option_compiles_every_block_for_fit_only_and_is_off_by_default():
    arguments = dict(num_labels=2, pretrained=None, model_config=tiny_config_kwargs())
    task = SequenceClassificationTask(**arguments)
    task.setup("fit")
    assert not task.model.model.blocks_compiled
    for stage in ("validate", "test", "predict"):
        task = SequenceClassificationTask(**arguments, compile=True)
        task.setup(stage)
        assert not task.model.model.blocks_compiled, stage
    task = SequenceClassificationTask(**arguments, compile=True)
    assert not task.model.model.blocks_compiled  # not at construction: a predict run would pay for it
    task.setup("fit")
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
    NeoBERTTask.setup(task, "fit")  # the shared part: the subclasses' own setup wants a datamodule
    assert task.hparams.compile and task.model.base_model.blocks_compiled
    assert not task_class(**arguments, pretrained=None, model_config=tiny_config_kwargs()).hparams.compile
