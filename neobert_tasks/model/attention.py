"""Attention backends: one callable per backend, all with the signature ``(query, key, value, context)``.

Two families, chosen by ``config._attn_implementation``:

* padded backends (``eager``, ``sdpa``, ``flex``) take ``(batch, length, heads, head_dim)``; ``eager`` and
  ``sdpa`` get a boolean mask that is True where attention is allowed, ``flex`` (PyTorch's FlexAttention)
  a document ``BlockMask`` built once per forward, with which it skips the blocks that cross documents;
* varlen backends (``flash_attention_2``, ``torch_varlen``, ``sdpa_varlen``) take the unpadded
  ``(total_tokens, heads, head_dim)`` with ``cu_seqlens``; the backbone unpads once on entry and re-pads
  once on exit, so the projections and FFNs skip padding. ``flash_attention_2`` is flash-attn's kernel,
  ``torch_varlen`` PyTorch's own (``torch.nn.attention.varlen.varlen_attn``), both CUDA-only. ``sdpa_varlen``
  lays each document into its own row of a ``(documents, longest document)`` batch for attention only,
  runs one batched SDPA with a key-padding mask, and gathers the real tokens back: the CPU counterpart of
  the varlen kernels, and the way the unpad/re-pad logic is tested on machines without CUDA.

``auto`` (the default) is not a backend but a choice among them by device and precision
(:func:`auto_backend`), made at each forward, or once by a task (:func:`settle_backend`).
All of them return ``(..., heads, head_dim)`` in the layout they were given.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

# PyTorch's CPU flash-attention kernel is very slow to differentiate in bf16/fp16 on short sequences
# (several times the explicit q·kᵀ/softmax/·v, break-even between 256 and 512 tokens: figures in
# bench/README.md); fp32 and inference are fine. Up to this many keys the training
# path on CPU uses the explicit product, whose (batch, heads, L, L) scores stay small at such lengths;
# longer sequences keep SDPA, which never builds an L × L tensor.
EXPLICIT_ATTENTION_MAX_LENGTH = 256
# The dtypes that the CUDA varlen kernels compute in; fp32 input is run in bf16 and cast back.
HALF_DTYPES = (torch.float16, torch.bfloat16)
# flex_attention is a fused kernel only under torch.compile; called as is, it is a slow reference that
# materialises the (B, H, L, L) scores and warns so (9× slower than compiled on CPU at 4 × 512 tokens, 12
# heads, where compiled it runs as fast as SDPA). The tests turn this off to skip compiling.
FLEX_COMPILED = True


@dataclass
class AttentionContext:
    """What a backend needs beyond q, k and v.

    Attributes:
        mask: Boolean, True = may attend, None = attend all: ``(batch, 1, 1 or L, L)`` for the padded
            backends, ``(documents, 1, 1, max_seqlen)`` for ``sdpa_varlen``'s per-document layout.
        cu_seqlens: Varlen backends: ``(documents + 1,)`` int32 cumulative document lengths.
        max_seqlen: Varlen backends: length of the longest document.
        slots: ``sdpa_varlen``: ``(total_tokens,)`` position of each token in the flattened
            ``(documents, max_seqlen)`` layout (see ``padding.document_slots``).
        block_mask: ``flex``: which (query, key) blocks hold pairs of the same document, built once per
            forward and shared by every layer (see ``padding.document_block_mask``).
    """

    mask: torch.Tensor | None = None
    cu_seqlens: torch.Tensor | None = None
    max_seqlen: int = 0
    slots: torch.Tensor | None = None
    # Not imported: torch < 2.5 lacks it.
    block_mask: torch.nn.attention.flex_attention.BlockMask | None = None


def _explicit_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q kᵀ / √d) v on ``(B, H, L, D)`` with masked scores set to -inf; fp32 softmax."""
    scores = (query * (1.0 / math.sqrt(query.shape[-1]))) @ key.transpose(-1, -2)  # (B, H, L, L)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return F.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype) @ value


def scaled_dot_product(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Attention on ``(B, H, L, D)``: PyTorch SDPA, or the explicit product where SDPA is slow."""
    if (
        query.device.type == "cpu"
        and query.dtype in (torch.bfloat16, torch.float16)
        and query.requires_grad
        and key.shape[-2] <= EXPLICIT_ATTENTION_MAX_LENGTH
    ):
        return _explicit_attention(query, key, value, mask)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)


def padded_attention(
    attend: Callable, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: AttentionContext
) -> torch.Tensor:
    """A padded backend: ``attend`` (on ``(B, H, L, D)``, with the boolean mask) on ``(B, L, H, D)`` input."""
    query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # (B, H, L, D)
    return attend(query, key, value, context.mask).transpose(1, 2)  # (B, L, H, D)


def sdpa_varlen_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: AttentionContext
) -> torch.Tensor:
    """SDPA on the unpadded ``(total_tokens, H, D)`` input, each document attending to itself only.

    With ``context.slots`` the tokens are scattered into one row per document, attended in one batched
    call with the key-padding ``context.mask``, and gathered back, so only attention sees padding.
    Without (documents of very unequal lengths, where those rows would be mostly padding) each document
    is attended on its own.
    """
    if context.slots is None:
        return _attend_each_document(query, key, value, context.cu_seqlens.tolist())
    documents = context.cu_seqlens.numel() - 1

    def one_row_per_document(tokens: torch.Tensor) -> torch.Tensor:  # (T, H, D) → (documents, H, L, D)
        rows = tokens.new_zeros(documents * context.max_seqlen, *tokens.shape[1:])
        rows = rows.index_copy(0, context.slots, tokens)
        return rows.unflatten(0, (documents, context.max_seqlen)).transpose(1, 2)

    output = scaled_dot_product(*(one_row_per_document(t) for t in (query, key, value)), context.mask)
    return output.transpose(1, 2).flatten(0, 1)[context.slots]  # (total_tokens, H, D)


def _attend_each_document(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, boundaries: list[int]
) -> torch.Tensor:
    """One attention call per document of the unpadded ``(total_tokens, H, D)`` input; no mask needed."""
    outputs = []
    for start, end in zip(boundaries[:-1], boundaries[1:], strict=True):
        # (n, H, D) → (1, H, n, D)
        q, k, v = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (query, key, value))
        outputs.append(scaled_dot_product(q, k, v, None).squeeze(0).transpose(0, 1))
    return torch.cat(outputs, dim=0)  # (total_tokens, H, D)


def flash_varlen_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: AttentionContext
) -> torch.Tensor:
    """flash-attn's ``flash_attn_varlen_func`` on the unpadded ``(total_tokens, H, D)`` input."""
    try:  # imported on first use only, so that CPU machines never need it
        from flash_attn import flash_attn_varlen_func as kernel
    except ImportError as error:
        raise ImportError(
            "attn_implementation='flash_attention_2' needs the flash-attn package and a CUDA GPU "
            "(pip install 'neobert_tasks[flash]'); use attn_implementation='sdpa' otherwise."
        ) from error
    half = _half_on_cuda("flash_attention_2", query, key, value)
    cu_seqlens, longest = context.cu_seqlens, context.max_seqlen
    # flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, ...)
    output = kernel(*half, cu_seqlens, cu_seqlens, longest, longest, dropout_p=0.0, causal=False)
    return output.to(query.dtype)


def _half_on_cuda(
    name: str, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v for a CUDA kernel that computes in fp16/bf16 only (flash-attn's and ``varlen_attn``):
    refused off CUDA; fp32 input (no autocast) is run in bf16, and the caller casts the output back."""
    if not query.is_cuda:
        raise RuntimeError(
            f"attn_implementation='{name}' runs on CUDA tensors only; the model is on "
            f"{query.device}. Use attn_implementation='sdpa' on this device."
        )
    dtype = query.dtype if query.dtype in HALF_DTYPES else torch.bfloat16
    return query.to(dtype), key.to(dtype), value.to(dtype)


def torch_varlen_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: AttentionContext
) -> torch.Tensor:
    """PyTorch's own flash kernel, ``torch.nn.attention.varlen.varlen_attn``, on the unpadded input."""
    half = _half_on_cuda("torch_varlen", query, key, value)
    # Imported here: the exported remote code must still load with a torch that predates it.
    from torch.nn.attention.varlen import varlen_attn

    cu_seqlens, longest = context.cu_seqlens, context.max_seqlen
    return varlen_attn(*half, cu_seqlens, cu_seqlens, longest, longest).to(query.dtype)


def flex_document_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, context: AttentionContext
) -> torch.Tensor:
    """FlexAttention on the padded ``(B, L, H, D)`` input, restricted by the document ``context.block_mask``.

    Padding queries attend to nothing and come out as zeros (FlexAttention's answer to a fully masked row).
    """
    if query.requires_grad and query.device.type in ("cpu", "mps") and torch.is_grad_enabled():
        raise RuntimeError(
            f"attn_implementation='flex' cannot train on {query.device.type}: torch's FlexAttention has no "
            "backward pass there; train with attn_implementation='sdpa' on this device."
        )
    query, key, value = (t.transpose(1, 2) for t in (query, key, value))  # (B, H, L, D)
    return _flex_kernel(query.device.type)(query, key, value, block_mask=context.block_mask).transpose(1, 2)


def _flex_kernel(device_type: str) -> Callable:
    """flex_attention, compiled once per process and device type unless ``FLEX_COMPILED`` is off."""
    from torch.nn.attention.flex_attention import flex_attention

    if not FLEX_COMPILED or torch.compiler.is_compiling():  # in compiled blocks, their own compile fuses it
        return flex_attention
    return _compiled_flex(flex_attention, device_type)


@functools.cache
def _compiled_flex(flex_attention: Callable, device_type: str) -> Callable:
    # torch 2.13's inductor writes C++ that does not compile ("'cur_kvSplitSize7' was not declared") for the
    # CPU kernel with dynamic shapes: there each batch shape gets a kernel of its own (4-7 s to compile).
    return torch.compile(flex_attention, dynamic=False if device_type == "cpu" else None)


# name → (function, takes unpadded input). eager: softmax(q kᵀ / √d) v with masked scores set to -inf (not
# multiplied by the mask), fp32 softmax; sdpa: PyTorch's fused attention with a broadcasting boolean mask.
ATTENTION_BACKENDS: dict[str, tuple[Callable, bool]] = {
    "eager": (functools.partial(padded_attention, _explicit_attention), False),
    "sdpa": (functools.partial(padded_attention, scaled_dot_product), False),
    "flex": (flex_document_attention, False),
    "sdpa_varlen": (sdpa_varlen_attention, True),
    "torch_varlen": (torch_varlen_attention, True),
    "flash_attention_2": (flash_varlen_attention, True),
}
# What attn_implementation accepts: a backend, or auto.
BACKEND_CHOICES = ("auto", *ATTENTION_BACKENDS)


def attention_backend(name: str | None) -> tuple[Callable, bool]:
    """The backend function for ``attn_implementation`` ``name`` and whether it takes unpadded input."""
    name = name or "sdpa"
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"Unknown attn_implementation {name!r} for NeoBERT; choose one of {sorted(BACKEND_CHOICES)}."
        )
    return ATTENTION_BACKENDS[name]


def auto_backend(device_type: str, dtype: torch.dtype, has_flash_attn: bool | None = None) -> str:
    """The backend ``auto`` picks when attention runs on ``device_type`` in ``dtype``: the fastest there.

    On CUDA in fp16/bf16, a varlen kernel (padding skipped everywhere): flash-attn's when installed, else
    PyTorch's own. Both compute in half precision only, so fp32 keeps ``sdpa`` rather than silently lose
    precision. Off CUDA, ``sdpa``: the fastest on CPU (``sdpa_varlen`` wins only on mixed-length rows, and
    ``flex`` only compiled and for inference; bench/README.md).
    """
    if device_type != "cuda" or dtype not in HALF_DTYPES:
        return "sdpa"
    if flash_attn_installed() if has_flash_attn is None else has_flash_attn:
        return "flash_attention_2"
    return "torch_varlen" if torch_has("varlen") else "sdpa_varlen"


def compute_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype attention computes in for input ``hidden``: autocast's when it is on, else the input's."""
    device_type = hidden.device.type
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else hidden.dtype


def resolve_backend(name: str | None, device_type: str, dtype: torch.dtype) -> str:
    """The backend that ``attn_implementation`` ``name`` runs: itself, or what ``auto`` picks."""
    return auto_backend(device_type, dtype) if name == "auto" else name or "sdpa"


DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def settle_backend(model, name: str | None, device_type: str, precision: str | None = None) -> str:
    """Set ``model``'s backend to what ``attn_implementation`` ``name`` runs on ``device_type`` at Lightning's
    ``precision`` (``"bf16-mixed"``, ``"32-true"``, …; half weights count as half too), and return the line
    that says which, e.g. ``Attention backend: sdpa (auto on cpu, fp32)``.

    A task calls it once the device is known; the model then never re-decides at a forward.
    """
    precision = str(precision or "")
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else model.dtype
    chosen = resolve_backend(name, device_type, dtype)
    model.config._attn_implementation = chosen
    how = f"auto on {device_type}, {DTYPE_NAMES.get(dtype, dtype)}" if name == "auto" else "as configured"
    return f"Attention backend: {chosen} ({how})"


# Backends that PyTorch alone runs, on any device; sdpa_varlen is the unpadded counterpart of flash-attn's.
TORCH_BACKENDS = ("sdpa", "sdpa_varlen", "eager")
# CUDA-only backends → what they need that this machine may lack.
CUDA_BACKENDS = {"flash_attention_2": "flash-attn", "torch_varlen": "varlen_attn"}


@functools.cache  # auto asks at every forward
def flash_attn_installed() -> bool:
    """Whether the flash-attn package is importable, without importing it (slow, and CUDA-only)."""
    return importlib.util.find_spec("flash_attn") is not None


@functools.cache
def torch_has(module: str) -> bool:
    """Whether this torch has ``torch.nn.attention.<module>`` (``varlen``: in 2.11, not in 2.9;
    ``flex_attention``: 2.5+)."""
    return importlib.util.find_spec(f"torch.nn.attention.{module}") is not None


def backend_problem(
    name: str | None, device_type: str, has_flash_attn: bool | None = None, training: bool = False
) -> str | None:
    """Why ``attn_implementation`` ``name`` cannot run on a ``device_type`` ("cpu", "cuda", ...) device
    (``training``: with a backward pass), as one sentence naming the key and the backends that do run
    there; None when it can.

    Asked before the model is built: transformers, given flash_attention_2 without flash-attn, tries to
    download a kernel from the hub and fails with a long traceback (or, online, runs code it fetched).
    """
    key = f"model.init_args.attn_implementation {name!r}"
    if name is not None and name not in BACKEND_CHOICES:
        return (
            f"{key} is not a NeoBERT attention backend; choose one of {', '.join(sorted(BACKEND_CHOICES))}."
        )
    module = {"flex": "flex_attention", "torch_varlen": "varlen"}.get(name)
    if module and not torch_has(module):
        return (
            f"{key} needs torch.nn.attention.{module}, which torch {torch.__version__} lacks; use"
            " sdpa_varlen or sdpa, or a newer torch."
        )
    if name == "flex" and training and device_type in ("cpu", "mps"):
        return (
            f"{key} cannot train on {device_type}: torch's FlexAttention has no backward pass there; use one"
            f" of {', '.join(TORCH_BACKENDS)} to train there (flex runs inference only)."
        )
    if name not in CUDA_BACKENDS:
        return None
    if device_type != "cuda":
        return (
            f"{key} runs on CUDA GPUs only and this run is on {device_type}; use one of"
            f" {', '.join(TORCH_BACKENDS)} there (sdpa_varlen skips padding as {CUDA_BACKENDS[name]} does)."
        )
    if name == "flash_attention_2" and not (
        flash_attn_installed() if has_flash_attn is None else has_flash_attn
    ):
        return (
            f"{key} needs the flash-attn package, which is not installed; use torch_varlen or sdpa_varlen"
            " (PyTorch's own attention on unpadded sequences) or sdpa, or pip install 'neobert_tasks[flash]'."
        )
    return None


# transformers validates attn_implementation against its own registry; make our other names known (only
# NeoBERT's forward ever dispatches to them, through ATTENTION_BACKENDS; auto is resolved before that).
for _name in ("sdpa_varlen", "torch_varlen", "flex"):
    AttentionInterface.register(_name, ATTENTION_BACKENDS[_name][0])
AttentionInterface.register("auto", sdpa_varlen_attention)
