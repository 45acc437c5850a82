"""``model.init_args.compile: true`` compiles the backbone's blocks (the compiled path is tested in
tests/model/test_fast_paths.py)."""

from __future__ import annotations

from neobert_tasks.tasks import SequenceClassificationTask
from tests.conftest import tiny_config_kwargs


def test_compile_option_compiles_every_block_and_is_off_by_default():
    arguments = dict(num_labels=2, pretrained=None, model_config=tiny_config_kwargs())
    assert not SequenceClassificationTask(**arguments).model.model.blocks_compiled
    task = SequenceClassificationTask(**arguments, compile=True)
    assert task.model.model.blocks_compiled and task.hparams.compile
    assert all(hasattr(block, "_compiled_call_impl") for block in task.model.model.transformer_encoder)
