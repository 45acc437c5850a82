"""PyTorch's own attention kernels as backends (``flex``, ``torch_varlen``) and the ``auto`` choice.

Every backend must compute what ``eager`` computes on real tokens: within fp32 rounding in fp32, within
bf16 rounding under bf16 autocast. ``flex`` runs on CPU for inference only (torch's FlexAttention has no
CPU backward); ``torch_varlen`` and ``flash_attention_2`` run on CUDA only, so their tests skip here.
Quick tests run flex uncompiled (the unfused reference, ``FLEX_COMPILED`` off); the compiled kernel is
tested in ``slow`` tests.
"""

from __future__ import annotations

import json

import pytest
import torch

from neobert_tasks.model import NeoBERTConfig, NeoBERTModel, attention
from neobert_tasks.model.attention import (
    auto_backend,
    backend_problem,
    resolve_backend,
    settle_backend,
    torch_has,
)
from tests.conftest import tiny_config_kwargs

NO_CUDA = "needs a CUDA GPU (the kernel is CUDA-only, or its backward is)"
# bf16 keeps 8 bits of mantissa: differences of a few 1e-2 on activations of order 1 are rounding.
BF16_TOLERANCE = 0.1
# flex_attention warns that it is not compiled; the quick tests mean it.
uncompiled_flex_warning = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.fixture
def uncompiled_flex(monkeypatch):
    monkeypatch.setattr(attention, "FLEX_COMPILED", False)


def _model(backend: str, device: str = "cpu") -> NeoBERTModel:
    torch.manual_seed(0)
    config = NeoBERTConfig(**tiny_config_kwargs(vocab_size=500), attn_implementation=backend)
    return NeoBERTModel(config).to(device).eval()


def _padded(lengths=(11, 7, 3, 16), device: str = "cpu") -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, length in enumerate(lengths):
        input_ids[row, :length] = torch.randint(1, 500, (length,), generator=generator)
        attention_mask[row, :length] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


def _packed(device: str = "cpu") -> dict[str, torch.Tensor]:
    """Two rows of packed documents (8 + 12 tokens, 5 + 9 + 6), position_ids restarting, no padding."""
    batch = _padded((20, 20), device)
    positions = [torch.cat([torch.arange(n) for n in row]) for row in ((8, 12), (5, 9, 6))]
    return {"input_ids": batch["input_ids"], "position_ids": torch.stack(positions).to(device)}


def _real(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch.get("attention_mask", torch.ones_like(batch["input_ids"])).bool()


def _outputs(backend: str, batch, device: str = "cpu", autocast: bool = False, grad: bool = False):
    """Real tokens' last hidden state, and with ``grad`` the gradient of its mean square on every weight."""
    model = _model(backend, device)
    with torch.set_grad_enabled(grad), torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
        hidden = model(**batch).last_hidden_state[_real(batch)].float()
    if not grad:
        return hidden, None
    hidden.pow(2).mean().backward()
    return hidden, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@uncompiled_flex_warning
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16"])
@pytest.mark.parametrize("make_batch", [_padded, _packed], ids=["padded", "packed"])
def test_flex_agrees_with_eager_on_cpu(uncompiled_flex, make_batch, autocast):
    batch = make_batch()
    expected, _ = _outputs("eager", batch, autocast=autocast)
    actual, _ = _outputs("flex", batch, autocast=autocast)
    tolerance = BF16_TOLERANCE if autocast else 1e-5
    torch.testing.assert_close(actual, expected, atol=tolerance, rtol=0)


@uncompiled_flex_warning
def test_flex_keeps_packed_documents_apart(uncompiled_flex):
    model, batch = _model("flex"), _packed()
    with torch.no_grad():
        packed = model(**batch).last_hidden_state[0]
        first = model(input_ids=batch["input_ids"][:1, :8]).last_hidden_state[0]
        second = model(input_ids=batch["input_ids"][:1, 8:]).last_hidden_state[0]
    torch.testing.assert_close(packed, torch.cat([first, second]), atol=1e-5, rtol=0)


def test_flex_refuses_to_train_on_cpu_in_one_sentence():
    model = _model("flex").train()
    with pytest.raises(RuntimeError, match="cannot train on cpu: torch's FlexAttention has no backward"):
        model(**_padded()).last_hidden_state.sum().backward()


@pytest.mark.slow  # compiles flex_attention (a few seconds per batch shape on CPU)
def test_compiled_flex_agrees_with_eager_on_cpu():
    batch = _packed()
    expected, _ = _outputs("eager", batch)
    actual, _ = _outputs("flex", batch)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


CUDA_BACKENDS = ["sdpa", "sdpa_varlen", "torch_varlen", "flex", "flash_attention_2"]


@pytest.mark.slow  # flex compiles its forward and backward kernels
@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
@pytest.mark.parametrize("make_batch", [_padded, _packed], ids=["padded", "packed"])
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
def test_backends_agree_with_eager_on_cuda_forward_and_gradients(backend, make_batch):
    if backend == "flash_attention_2" and backend_problem(backend, "cuda"):
        pytest.skip(backend_problem(backend, "cuda"))
    batch = make_batch("cuda")
    expected, expected_grads = _outputs("eager", batch, "cuda", autocast=True, grad=True)
    actual, grads = _outputs(backend, batch, "cuda", autocast=True, grad=True)
    torch.testing.assert_close(actual, expected, atol=BF16_TOLERANCE, rtol=0)
    assert grads.keys() == expected_grads.keys()
    for name, grad in grads.items():
        scale = expected_grads[name].abs().max().item()
        torch.testing.assert_close(grad, expected_grads[name], atol=0.05 * scale, rtol=0, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_torch_varlen_runs_fp32_input_in_bf16_and_returns_fp32():
    batch = _padded(device="cuda")
    expected, _ = _outputs("eager", batch, "cuda")
    actual, _ = _outputs("torch_varlen", batch, "cuda")
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, expected, atol=BF16_TOLERANCE, rtol=0)


def test_auto_is_the_default_and_runs_sdpa_on_cpu():
    config = NeoBERTConfig(**tiny_config_kwargs(vocab_size=500))
    assert config._attn_implementation == "auto"
    batch = _padded()
    expected, _ = _outputs("sdpa", batch)
    torch.testing.assert_close(_outputs("auto", batch)[0], expected, atol=0, rtol=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert resolve_backend("auto", "cpu", attention.compute_dtype(torch.zeros(1))) == "sdpa"


@pytest.mark.parametrize(
    ("device_type", "dtype", "has_flash_attn", "expected"),
    [
        ("cpu", torch.float32, False, "sdpa"),
        ("cpu", torch.bfloat16, True, "sdpa"),
        ("cuda", torch.bfloat16, True, "flash_attention_2"),
        # torch_varlen where this torch has varlen_attn (not in 2.9), else PyTorch's own unpadded path.
        ("cuda", torch.float16, False, "torch_varlen" if torch_has("varlen") else "sdpa_varlen"),
        ("cuda", torch.float32, True, "sdpa"),  # the half-precision kernels would lose fp32's precision
    ],
)
def test_auto_picks_by_device_and_precision(device_type, dtype, has_flash_attn, expected):
    assert auto_backend(device_type, dtype, has_flash_attn=has_flash_attn) == expected


def test_settling_auto_pins_the_backend_and_says_which():
    model = _model("auto")
    assert settle_backend(model, "auto", "cpu", "32-true") == "Attention backend: sdpa (auto on cpu, fp32)"
    assert model.config._attn_implementation == "sdpa"
    line = settle_backend(model, "auto", "cpu", "bf16-mixed")
    assert line == "Attention backend: sdpa (auto on cpu, bf16)"
    line = settle_backend(model, "sdpa_varlen", "cpu", "bf16-mixed")
    assert line == "Attention backend: sdpa_varlen (as configured)"
    assert model.config._attn_implementation == "sdpa_varlen"


def test_saved_config_never_carries_the_backend(tmp_path):
    _model("auto").save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not any("attn_implementation" in key for key in saved)
    assert NeoBERTModel.from_pretrained(tmp_path).config._attn_implementation == "auto"


def test_torch_varlen_is_refused_off_cuda_naming_the_backends_that_run_there():
    if not torch_has("varlen"):  # torch 2.9: the missing kernel is the problem everywhere
        for device_type in ("cpu", "cuda"):
            assert backend_problem("torch_varlen", device_type) == (
                "model.init_args.attn_implementation 'torch_varlen' needs torch.nn.attention.varlen, which"
                f" torch {torch.__version__} lacks; use sdpa_varlen or sdpa, or a newer torch."
            )
        return
    assert backend_problem("torch_varlen", "cpu") == (
        "model.init_args.attn_implementation 'torch_varlen' runs on CUDA GPUs only and this run is on cpu;"
        " use one of sdpa, sdpa_varlen, eager there (sdpa_varlen skips padding as varlen_attn does)."
    )
    assert backend_problem("torch_varlen", "cuda") is None


def test_flex_runs_anywhere_but_trains_on_cuda_only():
    assert backend_problem("flex", "cpu") is None
    assert backend_problem("flex", "cuda", training=True) is None
    assert backend_problem("flex", "cpu", training=True) == (
        "model.init_args.attn_implementation 'flex' cannot train on cpu: torch's FlexAttention has no"
        " backward pass there; use one of sdpa, sdpa_varlen, eager to train there (flex runs inference only)."
    )


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_auto_is_never_a_problem(device_type):
    assert backend_problem("auto", device_type, has_flash_attn=False, training=True) is None
