"""The files that make an export a sentence-transformers model: ``modules.json`` and its modules.

``SentenceTransformer(export, trust_remote_code=True)`` reads ``modules.json``: module 0 is the
backbone (``sentence_transformers.models.Transformer`` at the folder's root, configured by
``sentence_bert_config.json``, loaded through ``AutoModel`` and the export's remote code), module 1 pools
its token states (``1_Pooling/config.json``), and for a model trained as an embedding model, module 2
L2-normalises them (``2_Normalize``), as its training did. Prompts it was trained with (an instruction
before each query) are named in ``config_sentence_transformers.json``, so ``encode_query`` adds them.
The pooling is the one `neobert_tasks.model.pooling` computes, so both give the same embeddings. The
files are written by hand rather than by sentence-transformers itself, which is an optional extra: every
export has them, whether or not it is installed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from neobert_tasks.model.pooling import POOLING_MODES

POOLING_DIRECTORY = "1_Pooling"
NORMALIZE_DIRECTORY = "2_Normalize"
NORMALIZE_TYPE = "sentence_transformers.models.Normalize"
# The pooling config's key of each pooling mode (pooling_mode_<key>).
POOLING_KEYS = {"mean": "mean_tokens", "cls": "cls_token"}


def normalizes(directory: str | Path) -> bool:
    """Whether the export in ``directory`` already ends with a ``Normalize`` module (a re-export keeps it)."""
    modules = read_json(Path(directory) / "modules.json")
    return isinstance(modules, list) and any(
        isinstance(module, dict) and module.get("type") == NORMALIZE_TYPE for module in modules
    )


def exported_settings(directory: str | Path) -> dict:
    """The sentence-transformers settings an export in ``directory`` holds, that a re-export keeps unless
    told otherwise: ``pooling``, ``normalize``, ``prompts`` and ``max_seq_length`` (those it has)."""
    folder = Path(directory)
    settings: dict = {"normalize": normalizes(folder)}
    pooling = read_json(folder / POOLING_DIRECTORY / "config.json")
    if isinstance(pooling, dict):
        modes = [mode for mode in POOLING_MODES if pooling.get(f"pooling_mode_{POOLING_KEYS[mode]}")]
        if len(modes) == 1:
            settings["pooling"] = modes[0]
    prompts = (read_json(folder / "config_sentence_transformers.json") or {}).get("prompts")
    if isinstance(prompts, dict) and prompts:
        settings["prompts"] = prompts
    longest = (read_json(folder / "sentence_bert_config.json") or {}).get("max_seq_length")
    if isinstance(longest, int) and longest > 0:
        settings["max_seq_length"] = longest
    return settings


def read_json(path: Path):
    """The JSON content of ``path``; None when it is missing or unreadable (an export of another tool)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def write_sentence_transformers_files(
    directory: str | Path,
    hidden_size: int,
    max_seq_length: int,
    pooling: str = "mean",
    normalize: bool = False,
    prompts: dict[str, str] | None = None,
) -> None:
    """Write ``modules.json``, ``sentence_bert_config.json`` and the pooling config into ``directory``, for
    a backbone of width ``hidden_size``; with ``normalize``, a last module that L2-normalises; ``prompts``
    (name → text put before the input, e.g. ``{"query": "query: "}``) for ``encode(prompt_name=...)``."""
    if pooling not in POOLING_MODES:
        raise ValueError(f"export.pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}.")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": POOLING_DIRECTORY, "type": "sentence_transformers.models.Pooling"},
    ]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": NORMALIZE_DIRECTORY, "type": NORMALIZE_TYPE})
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
            "prompts": dict(prompts or {}),
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
        f"{POOLING_DIRECTORY}/config.json": pooling_config,
    }
    stale_normalize = Path(directory) / NORMALIZE_DIRECTORY
    if normalize:
        stale_normalize.mkdir(parents=True, exist_ok=True)  # Normalize has no config: an empty folder
    elif stale_normalize.is_dir():
        shutil.rmtree(stale_normalize)
    for relative, content in files.items():
        path = Path(directory) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(content, indent=2) + "\n")
