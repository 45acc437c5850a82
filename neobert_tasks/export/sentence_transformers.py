"""The files that make an export a sentence-transformers model: ``modules.json`` and its two modules.

``SentenceTransformer(export, trust_remote_code=True)`` reads ``modules.json``: module 0 is the
backbone (``sentence_transformers.models.Transformer`` at the folder's root, configured by
``sentence_bert_config.json``, loaded through ``AutoModel`` and the export's remote code), module 1 pools
its token states (``1_Pooling/config.json``). The pooling is the one `neobert_tasks.model.pooling` computes,
so both give the same embeddings. The files are written by hand rather than by sentence-transformers
itself, which is an optional extra: every export has them, whether or not it is installed.
"""

from __future__ import annotations

import json
from pathlib import Path

from neobert_tasks.model.pooling import POOLING_MODES

POOLING_DIRECTORY = "1_Pooling"


def write_sentence_transformers_files(
    directory: str | Path, hidden_size: int, max_seq_length: int, pooling: str = "mean"
) -> None:
    """Write ``modules.json``, ``sentence_bert_config.json`` and the pooling config into ``directory``, for
    a backbone of width ``hidden_size``."""
    if pooling not in POOLING_MODES:
        raise ValueError(f"export.pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}.")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIRECTORY, "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    }
    files = {  # path relative to the export → JSON content
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": max_seq_length, "do_lower_case": False},
        "config_sentence_transformers.json": {
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        f"{POOLING_DIRECTORY}/config.json": pooling_config,
    }
    for relative, content in files.items():
        path = Path(directory) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
