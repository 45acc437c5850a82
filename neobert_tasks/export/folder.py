"""A self-contained model folder: what every export writes, whatever the head.

* ``config.json`` (with an ``auto_map`` naming the remote code for every Auto class) and
  ``model.safetensors``, whose tensor names are the official checkpoint's;
* ``configuration_neobert.py`` and ``modeling_neobert.py``, generated from this package's model code, so
  ``from_pretrained(folder, trust_remote_code=True)`` and the pipelines work without neobert_tasks;
* the tokenizer;
* ``modules.json``, ``sentence_bert_config.json`` and ``1_Pooling/``, so sentence-transformers loads it;
* ``README.md``, the model card, and ``training_config.yaml``, the run's resolved config, when known;
* ``model.onnx`` and ``model.pt2`` when asked for.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from neobert_tasks.console import transformers_progress_bars_off
from neobert_tasks.export.graph import GRAPH_FORMATS, save_onnx, save_program
from neobert_tasks.export.model_card import CardFacts, write_model_card
from neobert_tasks.export.remote_code import AUTO_MAP, write_remote_code
from neobert_tasks.export.sentence_transformers import write_sentence_transformers_files
from neobert_tasks.run_directory import readable_as_umask_allows

TRAINING_CONFIG = "training_config.yaml"
# tokenizer_config.json keys that say how this process loaded the tokenizer, not what it is.
LOAD_TIME_KEYS = ("is_local", "local_files_only", "cache_dir", "revision", "token")
# tokenizer_config.json keys that transformers fills from a tokenizer.json's truncation and padding state.
CALL_STATE_KEYS = ("max_length", "stride", "truncation_strategy", "pad_to_multiple_of", "pad_token_type_id")


def export_model_folder(
    model: PreTrainedModel,
    directory: str | Path,
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
    pooling: str = "mean",
    normalize: bool = False,
    prompts: dict[str, str] | None = None,
    max_seq_length: int | None = None,
    card: CardFacts | None = None,
    training_config: str | Path | None = None,
    formats: list[str] | tuple[str, ...] = (),
    remove_other_graphs: bool = True,
) -> dict[str, float | None]:
    """Write ``model`` (any NeoBERT class) and what it needs into ``directory``.

    Args:
        model: The model to export, with its weights as they should be shipped.
        directory: The folder to write; created if needed, files of an earlier export overwritten.
        tokenizer: Saved beside the model; pipelines and sentence-transformers need it.
        pooling: How sentence-transformers pools token states into a sentence embedding: mean or cls.
        normalize: Also L2-normalise the embeddings there (a model trained as an embedding model).
        prompts: Prompts sentence-transformers puts before inputs, by name (``query``, ``document``).
        max_seq_length: Longest input sentence-transformers feeds the model and the saved tokenizer's
            ``model_max_length`` (the run's ``max_length``); by default the model's own, and for the tokenizer
            at most that.
        card: Facts for the model card; without them no ``README.md`` is written.
        training_config: The run's resolved config, copied as ``training_config.yaml``.
        formats: Graph formats to add: ``onnx`` and/or ``pt2``.
        remove_other_graphs: Remove graph files of an earlier export that ``formats`` does not ask for
            again (they would hold other weights); False when the weights are those of that export.

    Returns:
        For each graph format written, its largest difference to PyTorch where one was measured.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.config.auto_map = dict(AUTO_MAP)
    with transformers_progress_bars_off():  # a bar for writing one or two shards is only noise
        model.save_pretrained(directory)
    for weights in directory.glob("*.safetensors"):  # transformers 5 writes them 0600
        readable_as_umask_allows(weights)
    write_remote_code(directory)
    if tokenizer is not None:
        # The longest input a pipeline's `truncation=True` keeps: the run's (what `predict` cut at), else at
        # most what the model accepts, not bert-base-uncased's 512 (a longer run would be cut short).
        longest = max_seq_length or min(tokenizer.model_max_length, model.config.max_length)
        save_portable_tokenizer(tokenizer, directory, longest)
    write_sentence_transformers_files(
        directory,
        model.config.hidden_size,
        max_seq_length or model.config.max_length,
        pooling,
        normalize=normalize,
        prompts=prompts,
    )
    if training_config is not None and Path(training_config).is_file():
        shutil.copyfile(training_config, directory / TRAINING_CONFIG)
    if card is not None:
        write_model_card(directory, card)
    differences: dict[str, float | None] = {}
    for name, file_name in GRAPH_FORMATS.items():
        if name not in formats:
            if not remove_other_graphs:
                continue
            for stale in directory.glob(f"{file_name}*"):  # model.onnx and its external data, if any
                stale.unlink()
        elif name == "onnx":
            differences[name] = save_onnx(model, directory)[1]
        else:
            save_program(model, directory)
            differences[name] = None
    return differences


def save_portable_tokenizer(
    tokenizer: PreTrainedTokenizerBase, directory: Path, model_max_length: int | None = None
) -> None:
    """``tokenizer.save_pretrained(directory)``, writing a ``tokenizer_config.json`` transformers 4 reads,
    with ``model_max_length`` (where truncation cuts) when given.

    transformers 5 names the class of any tokenizer backed by a ``tokenizer.json`` ``TokenizersBackend``, a
    name transformers 4 does not know ("Tokenizer class TokenizersBackend does not exist"); both know it
    as ``PreTrainedTokenizerFast``, which transformers 5 maps to the same class. It also records how the
    tokenizer was loaded here (``local_files_only: true``), which means nothing to whoever loads the export.
    ``tokenizer.json`` would keep the truncation and padding of the tokenizer's last call (a SQuAD run's
    "only the second sequence, 256 tokens"), which whatever reads that file alone (the tokenizers library,
    text-embeddings-inference, transformers.js) then applies to every input: it is saved without them, as
    the hub's tokenizers are; transformers sets both per call anyway.
    """
    tokenizer.save_pretrained(directory)
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    fast_tokenizer = directory / "tokenizer.json"
    if fast_tokenizer.is_file():
        state = json.loads(fast_tokenizer.read_text())
        if state.get("truncation") is not None or state.get("padding") is not None:
            state["truncation"] = state["padding"] = None
            fast_tokenizer.write_text(json.dumps(state, indent=2, ensure_ascii=False) + "\n")
    for key in CALL_STATE_KEYS:  # what transformers copied from such a state when it loaded a tokenizer.json
        config.pop(key, None)
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in LOAD_TIME_KEYS:
        config.pop(key, None)
    if model_max_length is not None:
        config["model_max_length"] = int(model_max_length)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
