"""``torch.export`` of every head's inference path: one program for any batch size and length.

The padding bookkeeping must not branch on tensor values while traced (``model/padding.py`` builds the
key-padding mask whenever it is compiling or exporting), or ``torch.export`` refuses the model.
"""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.errors import ConfigError
from neobert_tasks.export.graph import (
    InferenceGraph,
    check_graph_formats,
    example_batch,
    export_program,
    save_program,
)
from neobert_tasks.model import (
    NeoBERTConfig,
    NeoBERTForQuestionAnswering,
    NeoBERTForSequenceClassification,
    NeoBERTModel,
)
from tests.conftest import tiny_config_kwargs

# The three output shapes: token states (token classification and MLM add a linear layer to them), the
# [CLS]-only path of sequence classification, and QA's two outputs. The ONNX exports of every head, which
# go through torch.export, are checked in test_outside_package.py.
HEADS = [NeoBERTModel, NeoBERTForSequenceClassification, NeoBERTForQuestionAnswering]


@pytest.mark.slow
@pytest.mark.parametrize("head_class", HEADS, ids=lambda cls: cls.__name__)
def test_exported_program_equals_the_model_at_other_shapes(head_class):
    torch.manual_seed(0)
    model = head_class(NeoBERTConfig(**tiny_config_kwargs(vocab_size=1000, num_labels=3))).eval()
    program = export_program(model)
    for batch_size, length in ((1, 5), (4, 33)):
        input_ids, attention_mask = example_batch(model, batch_size, length, seed=batch_size)
        with torch.no_grad():
            expected = InferenceGraph(model)(input_ids, attention_mask)
        exported = program.module()(input_ids, attention_mask)
        for ours, theirs in zip(expected, exported, strict=True):
            assert ours.shape == theirs.shape
            assert torch.allclose(ours, theirs, atol=1e-5, rtol=0), (ours - theirs).abs().max()
    assert model.training is False  # the model's mode is given back as it was


@pytest.mark.slow
def test_saved_program_loads_back(tmp_path):
    model = NeoBERTForSequenceClassification(NeoBERTConfig(**tiny_config_kwargs(num_labels=2)))
    path = save_program(model, tmp_path)
    assert model.training  # the export ran in eval mode and gave the training mode back
    input_ids, attention_mask = example_batch(model, 3, 17)
    (logits,) = torch.export.load(path).module()(input_ids, attention_mask)
    with torch.no_grad():
        assert torch.allclose(
            logits, model.eval()(input_ids=input_ids, attention_mask=attention_mask).logits, atol=1e-5
        )


def test_unknown_format_is_refused_in_one_sentence():
    with pytest.raises(
        ConfigError, match=r"export.formats: unknown format 'tflite'; choose from onnx, pt2\."
    ):
        check_graph_formats(["tflite"])
