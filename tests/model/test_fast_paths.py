"""The speed-ups of the backbone compute what the plain paths compute.

The [CLS]-only last block, the one-row-per-document layout of ``sdpa_varlen``, the explicit attention
used for short bf16 training on CPU, and compiled blocks must all agree with the straightforward
computation they replace.
"""

from __future__ import annotations

import time

import pytest
import torch

from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification, NeoBERTModel, padding
from neobert_tasks.model.attention import (
    EXPLICIT_ATTENTION_MAX_LENGTH,
    AttentionContext,
    scaled_dot_product,
    sdpa_varlen_attention,
)
from neobert_tasks.model.pooling import pool_hidden_states
from tests.conftest import tiny_config_kwargs

BACKENDS = ["eager", "sdpa", "sdpa_varlen"]


def _batch(lengths, vocab: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1, vocab, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return input_ids, attention_mask


def _classifier(backend: str) -> NeoBERTForSequenceClassification:
    torch.manual_seed(0)
    config = NeoBERTConfig(**tiny_config_kwargs(vocab_size=500), attn_implementation=backend, num_labels=3)
    return NeoBERTForSequenceClassification(config).eval()


@torch.no_grad()
@pytest.mark.parametrize("backend", BACKENDS)
def test_first_token_only_equals_the_first_token_of_the_full_output(backend):
    model = _classifier(backend).model
    input_ids, attention_mask = _batch([11, 7, 3, 16])
    full = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    first = model(input_ids=input_ids, attention_mask=attention_mask, first_token_only=True).last_hidden_state
    assert first.shape == (4, 1, 64)
    torch.testing.assert_close(first[:, 0], full[:, 0], atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("backend", BACKENDS)
def test_classifier_logits_do_not_depend_on_the_cls_only_last_block(backend):
    model = _classifier(backend)
    input_ids, attention_mask = _batch([11, 7, 3, 16])
    fast = model(input_ids=input_ids, attention_mask=attention_mask).logits
    # Asking for the hidden states runs every token through the last block.
    full = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    torch.testing.assert_close(fast, full.logits, atol=1e-5, rtol=0)
    # Packed rows take the full path (a row's first token is not every document's first token).
    position_ids = torch.cat([torch.arange(8), torch.arange(8)]).expand(4, 16)
    packed = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
    assert packed.shape == (4, 3) and torch.isfinite(packed).all()


def _left_padded(input_ids, attention_mask):
    """The same rows with their padding moved in front (what a serving stack with padding_side left sends)."""
    order = attention_mask.argsort(dim=1, stable=True)  # padding positions first, tokens keep their order
    return input_ids.gather(1, order), attention_mask.gather(1, order)


@torch.no_grad()
@pytest.mark.parametrize("backend", BACKENDS)
def test_left_padded_rows_get_the_logits_of_the_same_rows_padded_right(backend):
    model = _classifier(backend)
    input_ids, attention_mask = _batch([11, 7, 3, 16])
    right = model(input_ids=input_ids, attention_mask=attention_mask).logits
    left_ids, left_mask = _left_padded(input_ids, attention_mask)
    assert left_mask[2, 0] == 0 and left_ids[2, -1] == input_ids[2, 2]
    # The [CLS]-only last block, and the full last block when every hidden state is asked for.
    for all_states in (False, True):
        outputs = model(input_ids=left_ids, attention_mask=left_mask, output_hidden_states=all_states)
        torch.testing.assert_close(outputs.logits, right, atol=1e-5, rtol=0)


def test_cls_pooling_of_every_token_takes_each_rows_first_real_token():
    hidden = torch.arange(2 * 4, dtype=torch.float).reshape(2, 4, 1)
    left_padded = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool_hidden_states(hidden, left_padded, "cls").flatten().tolist() == [2.0, 4.0]
    assert pool_hidden_states(hidden, None, "cls").flatten().tolist() == [0.0, 4.0]


def _unpadded(lengths, heads: int = 2, head_dim: int = 8):
    generator = torch.Generator().manual_seed(1)
    total = sum(lengths)
    query, key, value = (torch.randn(total, heads, head_dim, generator=generator) for _ in range(3))
    cu_seqlens = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)
    return query, key, value, cu_seqlens


@pytest.mark.parametrize("lengths", [[5, 9, 1, 9], [300, 4, 2], [7]])
def test_one_row_per_document_equals_attending_to_each_document(lengths):
    query, key, value, cu_seqlens = _unpadded(lengths)
    max_seqlen = max(lengths)
    slots, mask = padding.document_slots(cu_seqlens, max_seqlen)
    batched = sdpa_varlen_attention(
        query,
        key,
        value,
        AttentionContext(cu_seqlens=cu_seqlens, max_seqlen=max_seqlen, slots=slots, mask=mask),
    )
    separate = sdpa_varlen_attention(
        query, key, value, AttentionContext(cu_seqlens=cu_seqlens, max_seqlen=max_seqlen)
    )
    torch.testing.assert_close(batched, separate, atol=1e-6, rtol=0)


def test_document_slots_lay_out_documents_and_give_up_on_very_unequal_long_ones():
    cu_seqlens = torch.tensor([0, 3, 5], dtype=torch.int32)
    slots, mask = padding.document_slots(cu_seqlens, 3)
    assert slots.tolist() == [0, 1, 2, 3, 4]
    assert mask[:, 0, 0].tolist() == [[True, True, True], [True, True, False]]
    assert padding.document_slots(torch.tensor([0, 4, 8], dtype=torch.int32), 4)[1] is None  # no padding
    # Two short documents beside one of 1000 tokens: rows would be two thirds padding.
    skewed = torch.tensor([0, 1000, 1010, 1020], dtype=torch.int32)
    assert padding.document_slots(skewed, 1000) == (None, None)


@pytest.mark.parametrize("length", [16, EXPLICIT_ATTENTION_MAX_LENGTH])
def test_explicit_attention_of_short_bf16_training_matches_sdpa(length):
    generator = torch.Generator().manual_seed(2)
    tensors = [torch.randn(3, 4, length, 16, generator=generator) for _ in range(3)]
    mask = torch.ones(3, 1, 1, length, dtype=torch.bool)
    mask[1, ..., length // 2 :] = False
    reference = [tensor.clone().requires_grad_() for tensor in tensors]
    expected = torch.nn.functional.scaled_dot_product_attention(*reference, attn_mask=mask)
    expected.square().sum().backward()
    half = [tensor.bfloat16().requires_grad_() for tensor in tensors]
    actual = scaled_dot_product(*half, mask)
    actual.float().square().sum().backward()
    torch.testing.assert_close(actual.float(), expected, atol=0.03, rtol=0.03)
    for low, high in zip(half, reference, strict=True):
        torch.testing.assert_close(low.grad.float(), high.grad, atol=0.1, rtol=0.05)


@pytest.mark.slow  # torch.compile of the blocks: seconds of compiling
def test_compiled_blocks_match_eager_blocks_on_batches_of_new_lengths():
    started = time.monotonic()
    torch.manual_seed(0)
    config = NeoBERTConfig(
        **tiny_config_kwargs(vocab_size=500, num_hidden_layers=1), attn_implementation="sdpa"
    )
    eager = NeoBERTModel(config).train()
    compiled = NeoBERTModel(config).train()
    compiled.load_state_dict(eager.state_dict())
    compiled.compile_blocks()
    for lengths in ([11, 7, 3], [20, 5, 9, 2]):  # the second batch is wider and taller: no recompilation
        input_ids, attention_mask = _batch(lengths)
        outputs = [
            model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            for model in (eager, compiled)
        ]
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-4, rtol=1e-4)
        for output in outputs:
            output.square().mean().backward()
    for (name, expected), actual in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(actual.grad, expected.grad, atol=1e-4, rtol=1e-3, msg=name)
    assert time.monotonic() - started < 120


class _CountHostReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops that copy a tensor's value to the host (`.item()`, `bool(tensor)`): on a GPU each
    one makes the host wait for every queued kernel."""

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.reads += 1
        return func(*args, **(kwargs or {}))


def host_reads(model: torch.nn.Module, **inputs: torch.Tensor) -> int:
    counter = _CountHostReads()
    with torch.no_grad(), counter:
        model(**inputs)
    return counter.reads


def test_padded_forward_reads_the_device_only_to_look_for_padding():
    torch.manual_seed(0)
    model = NeoBERTModel(NeoBERTConfig(**tiny_config_kwargs(vocab_size=500), attn_implementation="sdpa"))
    input_ids, attention_mask = _batch([9, 5, 7])
    # No positions given: 0 … length-1 need no check of their maximum nor of packing.
    assert host_reads(model.eval(), input_ids=input_ids) == 0
    # With a mask, one read decides whether there is padding at all (None lets SDPA pick any kernel).
    assert host_reads(model, input_ids=input_ids, attention_mask=attention_mask) == 1
    # Positions given by the caller are checked against max_length and for packed documents.
    positions = torch.arange(9).expand(3, 9)
    assert host_reads(model, input_ids=input_ids, attention_mask=attention_mask, position_ids=positions) == 3
