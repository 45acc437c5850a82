"""NeoBERT configuration, readable from the official ``chandar-lab/NeoBERT`` ``config.json`` as published.

The official file carries a few keys that are not configuration at all (``kwargs``,
``pretrained_model_name_or_path``, ``trust_remote_code``) and an ``auto_map`` that points at the official
remote code (``model.NeoBERT…``), which a folder saved here does not hold. Both are dropped, while every
real field keeps the official name so that the reference code can still read it. An ``auto_map`` naming
the remote-code files that neobert_tasks' exports carry (``configuration_neobert``, ``modeling_neobert``)
is kept: it is what lets transformers load such a folder without this package.
"""

from __future__ import annotations

from transformers import PretrainedConfig

# Keys seen in published NeoBERT configs that describe how the file was written, not the model.
_STRAY_KEYS = ("kwargs", "pretrained_model_name_or_path", "trust_remote_code")
# The remote-code modules of an export (see neobert_tasks.export.remote_code).
REMOTE_CODE_MODULES = ("configuration_neobert", "modeling_neobert")


def names_remote_code(auto_map: dict) -> bool:
    """Whether every class of ``auto_map`` lives in an export's remote-code modules.

    Entries are ``module.Class``, prefixed with ``repo--`` once transformers has loaded them from the hub.
    """
    return all(
        reference is None or reference.split("--")[-1].split(".")[0] in REMOTE_CODE_MODULES
        for value in auto_map.values()
        for reference in (value if isinstance(value, (list, tuple)) else [value])
    )


def swiglu_width(intermediate_size: int) -> int:
    """The real SwiGLU hidden width: two thirds of ``intermediate_size``, rounded up to a multiple of 8.

    SwiGLU has three matrices instead of two, so the official recipe shrinks the width to keep the FFN's
    parameter count that of a plain MLP of ``intermediate_size``: 3072 becomes 2048.
    """
    return 8 * ((int(2 * intermediate_size / 3) + 7) // 8)


class NeoBERTConfig(PretrainedConfig):
    """Configuration of a NeoBERT encoder; the defaults are the official checkpoint's values.

    Args:
        vocab_size: Number of token ids (bert-base-uncased WordPiece: 30522).
        hidden_size: Width of the residual stream.
        num_hidden_layers: Number of transformer blocks.
        num_attention_heads: Number of attention heads; ``hidden_size`` must equal heads × ``dim_head``.
        dim_head: Width of one attention head (derived from the two above when not given).
        intermediate_size: Nominal FFN width; the SwiGLU width actually used is ``swiglu_width`` of it.
        max_length: Longest input the model accepts (plays the role of ``max_position_embeddings``).
        norm_eps: Epsilon of every RMSNorm (1e-5 for the official checkpoint).
        rope_theta: Base of the rotary position angles (fixed at 10000 in NeoBERT).
        pad_token_id: Id of the padding token; its embedding row is zero at initialisation.
        embedding_init_range: Standard deviation of the embedding initialisation.
        decoder_init_range: Standard deviation of the initialisation of the other backbone and MLM weights.
        classifier_init_range: Standard deviation of the initialisation of new task heads.
        classifier_dropout: Dropout before and after the sequence-classification ``dense`` layer.
        tie_word_embeddings: Always False: NeoBERT's MLM decoder is not the embedding.
    """

    model_type = "neobert"
    attribute_map = {"max_position_embeddings": "max_length"}

    # transformers 5.x configs are dataclasses: fields are declared, validated in __post_init__.
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 28
    num_attention_heads: int = 12
    dim_head: int | None = None
    intermediate_size: int = 3072
    # Declared as a field so that transformers does not take it for a generation parameter.
    max_length: int = 4096
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    pad_token_id: int | None = 0
    embedding_init_range: float = 0.02
    decoder_init_range: float = 0.02
    classifier_init_range: float = 0.02
    classifier_dropout: float = 0.1
    # The MLM decoder has weights of its own. Written into config.json because transformers 4 ties the
    # output embedding to the input one unless a config says otherwise (an export's MLM head loaded
    # there gave the embedding's logits); transformers 5 ties only what a model declares.
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        for key in _STRAY_KEYS:
            kwargs.pop(key, None)
        if not names_remote_code(kwargs.get("auto_map") or {}):
            kwargs.pop("auto_map")  # the official remote code, which this folder does not hold
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"NeoBERTConfig: hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}."
            )
        if self.dim_head is None:
            self.dim_head = self.hidden_size // self.num_attention_heads
        if self.dim_head * self.num_attention_heads != self.hidden_size:
            raise ValueError(
                f"NeoBERTConfig: dim_head {self.dim_head} × num_attention_heads {self.num_attention_heads} "
                f"must equal hidden_size {self.hidden_size}."
            )
        if self.dim_head % 2 != 0:
            raise ValueError(f"NeoBERTConfig: dim_head {self.dim_head} must be even for rotary embeddings.")
        super().__post_init__(**kwargs)
        if self._attn_implementation is None:
            # transformers would take sdpa; auto picks the fastest backend for the device and precision
            self._attn_implementation = "auto"

    @property
    def ffn_width(self) -> int:
        """The SwiGLU hidden width actually used by every block (2048 for the official model)."""
        return swiglu_width(self.intermediate_size)
