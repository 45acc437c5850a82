"""The NeoBERT backbone: pre-RMSNorm blocks with per-head fused qkv, adjacent-pair RoPE and SwiGLU.

Module and parameter names are the official checkpoint's keys (``encoder`` is the token embedding,
``transformer_encoder.N.qkv``, ``ffn.w12``, ``layer_norm``), so the published ``model.safetensors``
loads with no renaming table and what we save loads in the reference code.
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput

from neobert_tasks.errors import ConfigError
from neobert_tasks.model.attention import (
    AttentionContext,
    attention_backend,
    compute_dtype,
    flex_document_attention,
    resolve_backend,
    sdpa_varlen_attention,
)
from neobert_tasks.model.configuration import NeoBERTConfig
from neobert_tasks.model.padding import (
    document_block_mask,
    document_ids,
    document_slots,
    first_token_index,
    gather_tokens,
    is_packed,
    padded_attention_mask,
    positions_from_cu_seqlens,
    scatter_tokens,
    unpad,
)
from neobert_tasks.model.rope import apply_rotation, rotary_cos_sin, rotation_pairs

try:  # transformers 5: init functions that leave the weights loaded from a checkpoint as they are
    from transformers import initialization as init
except ImportError:  # transformers 4 (an export's remote code) initialises only weights a checkpoint lacks
    from torch.nn import init

# Compiled variants of the block's forward allowed before dynamo gives up on it (see compile_blocks).
COMPILED_VARIANTS = 32


class SwiGLU(nn.Module):
    """SwiGLU FFN ``w3(silu(gate(x)) * up(x))``; ``w12`` rows ``[0, F)`` are the gate, ``[F, 2F)`` up."""

    def __init__(self, hidden_size: int, width: int):
        super().__init__()
        self.w12 = nn.Linear(hidden_size, 2 * width, bias=False)
        self.w3 = nn.Linear(width, hidden_size, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        gate, up = self.w12(hidden).chunk(2, dim=-1)  # (..., F) each
        return self.w3(nn.functional.silu(gate) * up)


class NeoBERTEncoderBlock(GradientCheckpointingLayer):
    """``x + wo(attention(attention_norm(x)))`` then ``x + ffn(ffn_norm(x))``; no biases."""

    def __init__(self, config: NeoBERTConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.dim_head
        self.attention_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.wo = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.ffn_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.ffn = SwiGLU(config.hidden_size, config.ffn_width)

    def forward(
        self,
        hidden: torch.Tensor,
        rotation: torch.Tensor,
        context: AttentionContext,
        attention,
        keep: torch.Tensor | tuple | None = None,
    ) -> torch.Tensor:
        """``hidden`` is ``(batch, length, hidden)`` for padded backends, ``(tokens, hidden)`` for varlen.

        ``rotation`` is RoPE's ``(cos, sin)`` pairs, ``(..., 1, 1, head_dim / 2, 2)``. With ``keep`` (an
        index into the token dimensions), every token still provides keys and values, but only the kept
        tokens go through the output projection and the FFN, and only they are returned.
        """
        # qkv is fused per head: (..., heads, 3 * head_dim) = q | k | v of (..., heads, head_dim) each
        qkv = self.qkv(self.attention_norm(hidden)).unflatten(-1, (self.num_heads, 3, self.head_dim))
        query, key = apply_rotation(qkv[..., :2, :], rotation).unbind(-2)  # q and k in one product
        attended = attention(query, key, qkv[..., 2, :], context)  # (..., heads, head_dim)
        if keep is not None:
            hidden, attended = hidden[keep], attended[keep]
        hidden = hidden + self.wo(attended.flatten(-2))
        return hidden + self.ffn(self.ffn_norm(hidden))


class NeoBERTPreTrainedModel(PreTrainedModel):
    """Shared weight initialisation, loading rules and backend support of every NeoBERT class."""

    config_class = NeoBERTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["NeoBERTEncoderBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True

    def _init_weights(self, module: nn.Module) -> None:
        """Embeddings from ``embedding_init_range``, task heads from ``classifier_init_range``, the rest
        from ``decoder_init_range``; biases zero, norms one. Uses ``transformers.initialization`` so that
        weights loaded from a checkpoint are never overwritten."""
        config = self.config
        if isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=config.embedding_init_range)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.Linear):
            is_head = getattr(module, "is_task_head", False)
            std = config.classifier_init_range if is_head else config.decoder_init_range
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.RMSNorm):
            init.ones_(module.weight)


class NeoBERTModel(NeoBERTPreTrainedModel):
    """The bare encoder: token ids in, final-RMSNormed hidden states out (no pooler).

    Accepts padded batches (``attention_mask``, padding on either side), packed rows whose
    ``position_ids`` restart at 0 at each document, or one flat packed row with ``cu_seqlens``; documents
    never attend to each other.
    """

    # A task checkpoint's head weights, when the backbone alone is loaded from it (AutoModel,
    # sentence-transformers): expected, not worth a warning.
    _keys_to_ignore_on_load_unexpected = [r"^decoder\.", r"^dense\.", r"^classifier\.", r"^qa_outputs\."]

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.encoder = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.transformer_encoder = nn.ModuleList(
            [NeoBERTEncoderBlock(config) for _ in range(config.num_hidden_layers)]
        )
        self.layer_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.gradient_checkpointing = False
        self.blocks_compiled = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.encoder

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.encoder = value

    def compile_blocks(self, **options) -> None:
        """``torch.compile`` every block in place, with dynamic shapes (regional compilation).

        All blocks share one compiled graph, so compiling costs one block's worth whatever the depth, and
        the unpad/re-pad bookkeeping around the blocks, which syncs with the host, stays eager. Batches of
        a new length reuse the graph instead of recompiling (``dynamic=True``).

        A fit still needs several variants of that graph: training and evaluation (grad mode), with and
        without autocast, full blocks and the [CLS]-only last block, and batches of one example (which
        dynamic shapes specialise). Past dynamo's default limit of 8 variants per function it would
        silently run the blocks eager, so the limit is raised (a process-wide dynamo setting).
        """
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, COMPILED_VARIANTS)
        for block in self.transformer_encoder:
            block.compile(**{"dynamic": True, **options})
        self.blocks_compiled = True

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        first_token_only: bool = False,
        **kwargs,
    ) -> BaseModelOutput | tuple:
        """Encode a batch.

        Args:
            input_ids: ``(batch, length)`` token ids (or ``(tokens,)`` with ``cu_seqlens``).
            attention_mask: ``(batch, length)``, 1 for tokens and 0 for padding.
            position_ids: ``(batch, length)`` positions; restarting at 0 marks a new packed document.
            cu_seqlens: ``(documents + 1,)`` boundaries of the documents packed in one flat row.
            inputs_embeds: ``(batch, length, hidden)`` embeddings used instead of ``input_ids``.
            token_type_ids: Accepted for tokenizer compatibility and ignored (NeoBERT has none).
            output_hidden_states: Also return the input of every block and the final output.
            return_dict: Return a ``BaseModelOutput`` (default) rather than a tuple.
            first_token_only: Return only each row's first real token (after a left-padded row's padding),
                ``(batch, 1, hidden)``: the last block then runs its output projection and FFN on those
                tokens alone (what a [CLS] head needs; ignored with ``output_hidden_states``).
        """
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        hidden = self.encoder(input_ids) if inputs_embeds is None else inputs_embeds
        if hidden.dim() == 2:  # a flat packed row (tokens, hidden) given with cu_seqlens
            hidden = hidden.unsqueeze(0)
        if cu_seqlens is not None:
            if attention_mask is not None or hidden.shape[0] != 1:
                raise ValueError(
                    "cu_seqlens describes one flat packed row: pass no attention_mask and batch 1."
                )
            position_ids = positions_from_cu_seqlens(cu_seqlens, hidden.shape[1])
        batch_size, length = hidden.shape[:2]
        if position_ids is None:
            # Positions 0 … length-1: the longest and the absence of packing are known without reading
            # the device (`.max()`/`.any()` would make the host wait for the GPU at every forward).
            position_ids = torch.arange(length, device=hidden.device).expand(batch_size, length)
            self._check_length(length)
            packed = False
        else:
            self._check_length(int(position_ids.max()) + 1 if position_ids.numel() else 0)
            packed = cu_seqlens is not None or is_packed(position_ids)
        documents = document_ids(attention_mask, position_ids, hidden.shape[:2])
        # auto, unless a task settled it already: decided here, where the device and precision are known
        name = self.config._attn_implementation
        if name == "auto":  # the dtype is looked up only then: a settled backend costs nothing per forward
            name = resolve_backend(name, hidden.device.type, compute_dtype(hidden))
        attention, unpadded_input = attention_backend(name)
        first_token_only = first_token_only and not output_hidden_states
        if unpadded_input:
            hidden, all_hidden = self._encode_unpadded(
                hidden, position_ids, documents, packed, attention, output_hidden_states, first_token_only
            )
        else:
            hidden, all_hidden = self._encode_padded(
                hidden, position_ids, documents, packed, attention, output_hidden_states, first_token_only,
                masked=attention_mask is not None,
            )  # fmt: skip
        if not return_dict:
            return tuple(value for value in (hidden, all_hidden) if value is not None)
        return BaseModelOutput(last_hidden_state=hidden, hidden_states=all_hidden)

    def _check_length(self, longest: int) -> None:
        """RoPE was trained up to ``max_length`` positions: refuse longer input rather than extrapolate."""
        if longest > self.config.max_length:
            raise ConfigError(
                f"Input of length {longest} is longer than this model's max_length "
                f"{self.config.max_length}; truncate or split it (tokenizer max_length)."
            )

    def _rotation(self, positions: torch.Tensor) -> torch.Tensor:
        """RoPE's rotation for ``positions`` ``(...)``, shaped ``(..., 1, 1, head_dim / 2, 2)`` to
        broadcast over heads and over the (query, key) pair that the blocks rotate together.

        Rows that are all the first row by construction (an ``expand``ed ``arange``, stride 0 over the
        batch) get the first row's rotation only, computed once and broadcast over the rows."""
        if positions.dim() == 2 and positions.stride(0) == 0:
            positions = positions[:1]
        cos, sin = rotary_cos_sin(positions, self.config.dim_head, self.config.rope_theta)
        return rotation_pairs(cos, sin)[..., None, None, :, :]

    def _run_blocks(self, hidden, rotation, context, attention, keep_hidden, keep_last=None, repad=None):
        """Run every block; with ``keep_hidden``, also return each block's input and the final output.

        ``keep_last`` restricts the last block's output to those tokens (see the block's ``keep``).
        """
        all_hidden = []
        last = len(self.transformer_encoder) - 1
        for index, block in enumerate(self.transformer_encoder):
            if keep_hidden:
                all_hidden.append(hidden)
            hidden = block(hidden, rotation, context, attention, keep_last if index == last else None)
        hidden = self.layer_norm(hidden)
        if not keep_hidden:
            return (hidden if repad is None else repad(hidden)), None
        all_hidden.append(hidden)
        if repad is not None:
            all_hidden = [repad(state) for state in all_hidden]
        return all_hidden[-1], tuple(all_hidden)

    def _encode_padded(
        self, hidden, position_ids, documents, packed, attention, keep_hidden, first_only, masked=True
    ):
        """Padded backends: every tensor stays ``(batch, length, …)``; padding is masked in attention.

        ``masked`` is False when no attention mask was given: there is then no padding to look for.
        """
        if attention is flex_document_attention:
            context = AttentionContext(block_mask=document_block_mask(documents))
        else:
            mask = padded_attention_mask(documents, packed, self.blocks_compiled, padded=masked)
            context = AttentionContext(mask=mask)
        keep_last = None
        if first_only:  # each row's first real token (behind the padding of a left-padded row)
            keep_last = first_token_index(documents >= 0) if masked else (slice(None), slice(0, 1))
        return self._run_blocks(
            hidden, self._rotation(position_ids), context, attention, keep_hidden, keep_last
        )

    def _encode_unpadded(self, hidden, position_ids, documents, packed, attention, keep_hidden, first_only):
        """Varlen backends: unpad once on entry to ``(tokens, …)``, re-pad once on exit."""
        unpadded = unpad(documents)
        hidden = gather_tokens(hidden, unpadded)  # (tokens, hidden)
        positions = gather_tokens(position_ids, unpadded)  # (tokens,)
        context = AttentionContext(cu_seqlens=unpadded.cu_seqlens, max_seqlen=unpadded.max_seqlen)
        if attention is sdpa_varlen_attention:
            context.slots, context.mask = document_slots(unpadded.cu_seqlens, unpadded.max_seqlen)
        repad = functools.partial(scatter_tokens, unpadded=unpadded)
        keep_last = None
        # Each row's first real token is its document's first when rows hold one document each and no
        # row is empty: then the last block needs only those, in row order, and nothing is re-padded.
        if first_only and not packed and bool((documents.amax(dim=1) == 0).all()):
            keep_last = unpadded.cu_seqlens[:-1].long()
            repad = functools.partial(torch.unsqueeze, dim=1)  # (batch, hidden) → (batch, 1, hidden)
        return self._run_blocks(
            hidden, self._rotation(positions), context, attention, keep_hidden, keep_last, repad
        )
