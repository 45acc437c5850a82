"""Gradient caching (GradCache, Gao et al. 2021): a contrastive batch of any size in the memory of a chunk.

A contrastive loss couples every embedding of the batch, so it cannot be split into independent
micro-batches as gradient accumulation does. GradCache splits the *encoder* instead:

1. encode the batch chunk by chunk without building a graph, keeping only the embeddings;
2. compute the loss on those embeddings and backpropagate to them (cheap: no encoder in the graph);
3. encode each chunk again, with a graph, and backpropagate the cached embedding gradients through it.

The peak memory is one chunk's activations plus the batch's embeddings. The gradients equal the
uncached ones up to float rounding, provided that both passes draw the same dropout masks: each chunk's
random-number state is saved before step 1 and restored for step 3, as activation checkpointing does.

`cached_embeddings` wraps steps 1 and 3 in an autograd function, so the loss is an ordinary tensor and
Lightning's automatic optimisation (precision plugins, gradient accumulation and clipping) applies as is.
torch.utils.checkpoint cannot be used directly: it recomputes one segment, whereas here the loss between
the two passes sees all chunks at once.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from functools import partial

import torch

Encode = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def split_inputs(inputs: dict[str, torch.Tensor], chunk_size: int) -> list[dict[str, torch.Tensor]]:
    """The rows of ``inputs`` (tensors of equal first dimension) in chunks of at most ``chunk_size``, each
    trimmed to its own longest row so that a chunk of short texts does not carry the batch's padding."""
    rows = next(iter(inputs.values())).shape[0]
    chunks = []
    for start in range(0, rows, chunk_size):
        chunk = {key: value[start : start + chunk_size] for key, value in inputs.items()}
        mask = chunk.get("attention_mask")
        if mask is not None and mask.dim() == 2 and mask.shape[0]:
            # Right padding: every row's tokens come first, so the longest row ends at the last used column.
            length = int(mask.sum(dim=1).max())
            chunk = {key: value[:, :length] if value.dim() == 2 else value for key, value in chunk.items()}
        chunks.append(chunk)
    return chunks


class _RandomState:
    """The CPU generator's state and, on an accelerator, that device's: what dropout draws from."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.accelerator = None
        if device.type != "cpu":
            self.accelerator = torch.get_device_module(device.type).get_rng_state(device)

    @contextmanager
    def restored(self):
        """Run the body with this state; the generators are put back as they were afterwards."""
        devices = [self.device] if self.accelerator is not None else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.set_rng_state(self.cpu)
            if self.accelerator is not None:
                torch.get_device_module(self.device.type).set_rng_state(self.accelerator, self.device)
            yield


class _CachedEmbeddings(torch.autograd.Function):
    """Forward: embeddings of every chunk, without a graph. Backward: re-encode each chunk with a graph,
    send its slice of the incoming gradient through it, and return the parameters' summed gradients.

    The parameters are inputs of the function, and each chunk's gradients are computed with
    `torch.autograd.grad` rather than accumulated into ``.grad``: autograd then accumulates each parameter's
    gradient once per backward pass, after every chunk, which is when DDP's hooks start its all-reduce.
    (Backward passes inside this one would fire them at the first chunk, with a partial gradient.)"""

    @staticmethod
    def forward(ctx, encode: Encode, chunks: list[dict[str, torch.Tensor]], *parameters: torch.Tensor):
        device = parameters[0].device
        ctx.encode, ctx.chunks, ctx.states = encode, chunks, []
        # Autocast is not active in backward: remember it, to re-encode in the precision of the forward.
        autocast_on, dtype = torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type)
        ctx.autocast = partial(torch.autocast, device.type, dtype=dtype) if autocast_on else nullcontext
        ctx.parameters = parameters  # the leaves themselves: their graph nodes are what grad() targets
        embeddings = []
        for chunk in chunks:
            ctx.states.append(_RandomState(device))
            embeddings.append(encode(chunk))  # autograd functions run their forward without a graph
        return torch.cat(embeddings)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor):
        parameters = ctx.parameters
        totals: list[torch.Tensor | None] = [None] * len(parameters)
        offset = 0
        for chunk, state in zip(ctx.chunks, ctx.states, strict=True):
            with state.restored(), torch.enable_grad(), ctx.autocast():
                embeddings = ctx.encode(chunk)
            rows = embeddings.shape[0]
            grads = torch.autograd.grad(
                embeddings,
                parameters,
                gradient[offset : offset + rows].to(embeddings.dtype),
                allow_unused=True,
            )
            totals = [
                t if g is None else g if t is None else t.add_(g) for t, g in zip(totals, grads, strict=True)
            ]
            offset += rows
        return None, None, *totals


def cached_embeddings(
    encode: Encode, inputs: dict[str, torch.Tensor], chunk_size: int, parameters: list[torch.Tensor]
) -> torch.Tensor:
    """``encode(inputs)`` computed ``chunk_size`` rows at a time with GradCache: the result is
    differentiable with respect to ``parameters`` (those of ``encode``'s model that train), and its backward
    pass re-encodes one chunk at a time (``(rows, dim)``)."""
    return _CachedEmbeddings.apply(encode, split_inputs(inputs, chunk_size), *parameters)
