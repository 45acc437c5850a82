"""Padding bookkeeping: documents in a batch, unpadding to ``(total_tokens, …)`` and re-padding.

A batch reaches the backbone as ``(batch, length)`` rows. A row holds one sequence and its padding (after
it, or before it), or, for packed input, several documents back to back whose ``position_ids`` restart at 0
(or whose boundaries are given as ``cu_seqlens``). Everything below reduces both cases to one description:
a *document id* per token (-1 for padding), from which the attention masks of the padded backends and
the ``cu_seqlens`` of the varlen backends and the block mask of ``flex`` are derived. Documents never
attend to one another.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Unpadded:
    """Where the real tokens of a padded ``(batch, length)`` batch sit once flattened.

    Attributes:
        indices: ``(total_tokens,)`` positions of the real tokens in the flattened ``batch * length``.
        cu_seqlens: ``(documents + 1,)`` int32 cumulative document lengths, as flash-attn expects.
        max_seqlen: Length of the longest document.
        batch_size: Rows of the padded batch.
        length: Columns of the padded batch.
    """

    indices: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    batch_size: int
    length: int


def document_ids(
    attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None, shape: torch.Size
) -> torch.Tensor:
    """Document index of every token within its row, -1 on padding; ``(batch, length)`` int64.

    A new document starts wherever ``position_ids`` is 0 after the first token of a row; without
    ``position_ids`` every row is one document.
    """
    device = (attention_mask if attention_mask is not None else position_ids).device
    if position_ids is None:
        documents = torch.zeros(shape, dtype=torch.long, device=device)
    else:
        starts = position_ids == 0
        starts[:, 0] = False  # the first document of a row is document 0 whatever its first position
        documents = starts.long().cumsum(dim=1)
    if attention_mask is not None:
        documents = documents.masked_fill(attention_mask == 0, -1)
    return documents


def is_packed(position_ids: torch.Tensor | None) -> bool:
    """Whether any row holds more than one document (a ``position_ids`` restarting at 0 mid-row)."""
    return position_ids is not None and bool((position_ids[:, 1:] == 0).any())


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, total_tokens: int) -> torch.Tensor:
    """Positions that restart at 0 at each document boundary of a packed row; ``(1, total_tokens)``."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    starts = torch.repeat_interleave(cu_seqlens[:-1].long(), lengths.long())  # (total_tokens,)
    return (torch.arange(total_tokens, device=cu_seqlens.device) - starts).unsqueeze(0)


def unpad(documents: torch.Tensor) -> Unpadded:
    """Flatten the real tokens of a batch and find each document's span among them.

    Args:
        documents: ``(batch, length)`` document ids from :func:`document_ids` (-1 on padding).
    """
    batch_size, length = documents.shape
    flat = documents.flatten()
    indices = torch.nonzero(flat >= 0).flatten()  # (total_tokens,)
    # A document is a run of equal (row, document) keys among the real tokens.
    rows = torch.div(indices, length, rounding_mode="floor")
    keys = rows * (length + 1) + flat[indices]
    lengths = torch.unique_consecutive(keys, return_counts=True)[1]  # (documents,)
    cu_seqlens = torch.nn.functional.pad(lengths.cumsum(0), (1, 0)).to(torch.int32)
    max_seqlen = int(lengths.max()) if lengths.numel() else 0
    return Unpadded(indices, cu_seqlens, max_seqlen, batch_size, length)


def first_token_index(real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each row's first real token is, as an index that takes ``(batch, length, …)`` to
    ``(batch, 1, …)``: position 0 in right-padded rows, the first after the padding in left-padded ones.

    ``real`` is ``(batch, length)``, true on tokens. Computed on the device, without reading it back.
    """
    rows = torch.arange(real.shape[0], device=real.device).unsqueeze(1)  # (batch, 1)
    first = real.int().argmax(dim=1, keepdim=True)  # argmax gives the first of equal maxima: (batch, 1)
    return rows, first


def gather_tokens(hidden: torch.Tensor, unpadded: Unpadded) -> torch.Tensor:
    """``(batch, length, ...)`` → ``(total_tokens, ...)``: keep the real tokens only."""
    return hidden.flatten(0, 1)[unpadded.indices]


def scatter_tokens(tokens: torch.Tensor, unpadded: Unpadded) -> torch.Tensor:
    """``(total_tokens, ...)`` → ``(batch, length, ...)``, zeros on padding positions."""
    flat = tokens.new_zeros(unpadded.batch_size * unpadded.length, *tokens.shape[1:])
    flat[unpadded.indices] = tokens
    return flat.unflatten(0, (unpadded.batch_size, unpadded.length))


def document_slots(
    cu_seqlens: torch.Tensor, max_seqlen: int
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Lay unpadded documents out as the rows of a ``(documents, max_seqlen)`` batch, for attention.

    Returns each token's position in that layout flattened, ``(total_tokens,)``, and the layout's
    key-padding mask ``(documents, 1, 1, max_seqlen)`` (True = real token; None when every document
    has ``max_seqlen`` tokens). Returns ``(None, None)`` when the layout would be more than half
    padding with documents longer than a few hundred tokens: attending to each document separately
    is then cheaper than attending over that much padding.
    """
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()  # (documents,)
    documents, total_tokens = lengths.numel(), int(cu_seqlens[-1])
    if documents * max_seqlen > 2 * total_tokens and max_seqlen > 256:
        return None, None
    document_of_token = torch.repeat_interleave(torch.arange(documents, device=lengths.device), lengths)
    slots = document_of_token * max_seqlen + positions_from_cu_seqlens(cu_seqlens, total_tokens)[0]
    if documents * max_seqlen == total_tokens:
        return slots, None
    mask = torch.arange(max_seqlen, device=lengths.device) < lengths[:, None]  # (documents, max_seqlen)
    return slots, mask[:, None, None, :]


def padded_attention_mask(
    documents: torch.Tensor, packed: bool, always: bool = False, padded: bool = True
) -> torch.Tensor | None:
    """Boolean mask for the padded backends, True where attention is allowed.

    Without packing it is a key-padding mask ``(batch, 1, 1, length)`` that broadcasts over heads and
    queries, so no ``(batch, heads, L, L)`` tensor is ever built. Packed rows need a block-diagonal
    ``(batch, 1, L, L)`` mask so that documents do not see each other. Returns None when there is no
    padding at all, which lets SDPA pick its fastest kernels, unless ``always`` (compiled blocks: a
    mask that is sometimes None would compile every block twice). ``padded=False`` says that there is
    no padding (no attention mask was given), which spares reading ``documents`` back from the device.
    """
    if packed:
        same_document = documents.unsqueeze(-1) == documents.unsqueeze(-2)  # (batch, L, L)
        allowed = same_document & (documents >= 0).unsqueeze(1)
        # Padding queries may look anywhere: a fully masked row would make softmax return NaN.
        allowed |= (documents < 0).unsqueeze(-1)
        return allowed.unsqueeze(1)  # (batch, 1, L, L)
    # A traced graph (torch.compile, torch.export, ONNX) cannot branch on the tensor's values: it always
    # gets the mask, which is exact whether or not there is padding.
    always = always or torch.compiler.is_compiling()
    if not always and (not padded or bool((documents >= 0).all())):
        return None
    return (documents >= 0)[:, None, None, :]


def document_block_mask(documents: torch.Tensor):
    """FlexAttention's ``BlockMask`` for ``documents`` ``(batch, length)`` (:func:`document_ids`): each token
    attends to the tokens of its own document only, and padding to nothing (FlexAttention then returns
    zeros, not NaN). Built once per forward: it evaluates the rule on every (query, key) pair and keeps,
    per 128 × 128 block, whether the block is empty, full or partial, so that attention skips empty ones.
    """
    # Imported here: the exported remote code must still load with a torch that predates FlexAttention.
    from torch.nn.attention.flex_attention import create_block_mask

    def same_document(batch, head, query, key):
        return (documents[batch, query] == documents[batch, key]) & (documents[batch, key] >= 0)

    batch_size, length = documents.shape
    return create_block_mask(same_document, batch_size, None, length, length, device=documents.device)
