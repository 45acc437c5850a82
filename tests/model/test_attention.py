"""Backends agree, padding changes nothing, packed documents stay apart, unpad/re-pad is lossless."""

from __future__ import annotations

import pytest
import torch

from neobert_tasks.model import NeoBERTConfig, NeoBERTModel, padding
from neobert_tasks.model.attention import backend_problem
from tests.conftest import tiny_config_kwargs

CPU_BACKENDS = ["eager", "sdpa", "sdpa_varlen"]
LENGTHS = [11, 7, 3, 16]


def _model(backend: str = "sdpa") -> NeoBERTModel:
    torch.manual_seed(0)
    config = NeoBERTConfig(**tiny_config_kwargs(vocab_size=500), attn_implementation=backend)
    return NeoBERTModel(config).eval()


def _sequences(lengths=LENGTHS, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 500, (length,), generator=generator) for length in lengths]


def _padded_batch(sequences) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(sequence) for sequence in sequences)
    input_ids = torch.zeros(len(sequences), length, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = sequence
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask


@torch.no_grad()
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_each_sequence_in_a_padded_batch_equals_the_sequence_alone(backend):
    model = _model(backend)
    sequences = _sequences()
    input_ids, attention_mask = _padded_batch(sequences)
    batch = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    for row, sequence in enumerate(sequences):
        alone = model(input_ids=sequence[None]).last_hidden_state[0]
        torch.testing.assert_close(batch[row, : len(sequence)], alone, atol=1e-5, rtol=0)


@torch.no_grad()
@pytest.mark.parametrize("backend", ["eager", "sdpa_varlen"])
def test_backends_agree_with_sdpa(backend):
    input_ids, attention_mask = _padded_batch(_sequences())
    expected = _model("sdpa")(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    actual = _model(backend)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.bool()
    torch.testing.assert_close(actual[mask], expected[mask], atol=1e-5, rtol=0)
    if backend == "sdpa_varlen":  # re-padding writes zeros, never stale values, at padding positions
        assert torch.count_nonzero(actual[~mask]) == 0


@torch.no_grad()
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_packed_rows_equal_separate_sequences(backend):
    model = _model(backend)
    sequences = _sequences()
    separate = [model(input_ids=sequence[None]).last_hidden_state[0] for sequence in sequences]
    # Row 0 packs documents 0 and 1, row 1 packs 2 and 3, then right padding.
    rows = [torch.cat(sequences[:2]), torch.cat(sequences[2:])]
    positions = [torch.cat([torch.arange(len(s)) for s in pair]) for pair in (sequences[:2], sequences[2:])]
    input_ids, attention_mask = _padded_batch(rows)
    position_ids = torch.zeros_like(input_ids)
    for row, position in enumerate(positions):
        position_ids[row, : len(position)] = position
    packed = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    torch.testing.assert_close(packed.last_hidden_state[0, :18], torch.cat(separate[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(packed.last_hidden_state[1, :19], torch.cat(separate[2:]), atol=1e-5, rtol=0)
    # One flat row with cu_seqlens, as a padding-free collator produces.
    cu_seqlens = torch.tensor([0, 11, 18, 21, 37], dtype=torch.int32)
    flat = model(input_ids=torch.cat(sequences), cu_seqlens=cu_seqlens).last_hidden_state[0]
    torch.testing.assert_close(flat, torch.cat(separate), atol=1e-5, rtol=0)


def test_unpad_and_repad_round_trip_and_cu_seqlens():
    _, attention_mask = _padded_batch(_sequences())
    documents = padding.document_ids(attention_mask, None, attention_mask.shape)
    unpadded = padding.unpad(documents)
    assert unpadded.cu_seqlens.tolist() == [0, 11, 18, 21, 37]
    assert unpadded.max_seqlen == 16 and unpadded.cu_seqlens.dtype == torch.int32
    hidden = torch.randn(*attention_mask.shape, 5) * attention_mask[..., None]
    tokens = padding.gather_tokens(hidden, unpadded)
    assert tokens.shape == (37, 5)
    assert torch.equal(padding.scatter_tokens(tokens, unpadded), hidden)


def test_packed_documents_and_padding_give_separate_cu_seqlens():
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 0, 0], [0, 1, 2, 3, 0, 0, 0]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0, 0]])
    documents = padding.document_ids(attention_mask, position_ids, position_ids.shape)
    assert documents.tolist() == [[0, 0, 0, 1, 1, 2, -1], [0, 0, 0, 0, 1, -1, -1]]
    assert padding.unpad(documents).cu_seqlens.tolist() == [0, 3, 5, 6, 10, 11]


def test_padded_mask_broadcasts_and_is_none_without_padding():
    _, attention_mask = _padded_batch(_sequences())
    documents = padding.document_ids(attention_mask, None, attention_mask.shape)
    assert padding.padded_attention_mask(documents, packed=False).shape == (4, 1, 1, 16)
    full = padding.document_ids(torch.ones(2, 5, dtype=torch.long), None, (2, 5))
    assert padding.padded_attention_mask(full, packed=False) is None


def test_gradients_reach_every_parameter():
    model = _model("sdpa").train()
    input_ids, attention_mask = _padded_batch(_sequences())
    model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.pow(2).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad) > 0, name


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_bf16_autocast_runs_and_stays_close_to_fp32(backend):
    model = _model(backend)
    input_ids, attention_mask = _padded_batch(_sequences())
    with torch.no_grad():
        reference = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.bool()
    assert torch.isfinite(output).all()
    assert (output.float()[mask] - reference[mask]).abs().max() < 0.1


def test_hidden_states_on_request_for_padded_and_varlen_paths():
    input_ids, attention_mask = _padded_batch(_sequences())
    for backend in ("sdpa", "sdpa_varlen"):
        output = _model(backend)(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
        )
        assert len(output.hidden_states) == 3  # embeddings, after block 1, final (normed) output
        assert output.hidden_states[0].shape == (4, 16, 64)
        assert torch.equal(output.hidden_states[-1], output.last_hidden_state)


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, None])
def test_torch_backends_run_anywhere(backend):
    assert backend_problem(backend, "cpu") is None
    assert backend_problem(backend, "cuda", has_flash_attn=False) is None


def test_flash_attention_is_refused_on_a_cpu_naming_the_backends_that_run_there():
    assert backend_problem("flash_attention_2", "cpu") == (
        "model.init_args.attn_implementation 'flash_attention_2' runs on CUDA GPUs only and this run is on"
        " cpu; use one of sdpa, sdpa_varlen, eager there (sdpa_varlen skips padding as flash-attn does)."
    )


def test_flash_attention_on_cuda_without_flash_attn_names_the_torch_native_backend():
    assert backend_problem("flash_attention_2", "cuda", has_flash_attn=False) == (
        "model.init_args.attn_implementation 'flash_attention_2' needs the flash-attn package, which is not"
        " installed; use torch_varlen or sdpa_varlen (PyTorch's own attention on unpadded sequences) or sdpa,"
        " or pip install 'neobert_tasks[flash]'."
    )
    assert backend_problem("flash_attention_2", "cuda", has_flash_attn=True) is None


def test_unknown_backend_lists_the_backends():
    assert backend_problem("flash_attention_3", "cuda", has_flash_attn=True) == (
        "model.init_args.attn_implementation 'flash_attention_3' is not a NeoBERT attention backend; choose"
        " one of auto, eager, flash_attention_2, flex, sdpa, sdpa_varlen, torch_varlen."
    )
