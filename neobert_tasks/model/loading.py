"""Build a NeoBERT model with a given head from a checkpoint (local or hub) or from a config.

This is the one place where the tasks turn their YAML strings (``pretrained``, ``model_config``)
into a model, so that every task reports a wrong path or key the same way.

A checkpoint fine-tuned for another task keeps its backbone but not its classifier when the label count
differs (MNLI's three classes → RTE's two, as the NeoBERT paper transfers them): the head is initialised
anew, with a warning that says so.

Weights load from safetensors only: a folder holding only ``pytorch_model.bin`` (a pickle, which can run
code when loaded) is refused with the one command that converts it (`convert_pickle_weights`), unless
the task's ``allow_pickle_weights`` opts in. Backbone weights that do not fit the folder's config.json
(missing, extra, or of another shape) are refused by name (`check_weights_fit`): transformers would start
them from random values or drop them. ``validate``, ``test`` and ``predict`` of a checkpoint build the
model from the shape the checkpoint records instead of loading ``pretrained``
(`architecture_from_checkpoint`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import difflib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel

from neobert_tasks.errors import ConfigError, MissingPathError
from neobert_tasks.model.attention import backend_problem
from neobert_tasks.model.configuration import NeoBERTConfig

OFFICIAL_CHECKPOINT = "chandar-lab/NeoBERT"
# Head classes whose ``classifier`` has one output per label: a checkpoint of one of them fits another
# label count only with a new classifier.
LABEL_HEAD_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification")
# Weight files of a Hugging Face folder: pickle (torch.save) and safetensors, single or sharded.
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


# NeoBERTConfig fields that fix the backbone's shape and numerics: what a checkpoint records of its model
# (``neobert_config``), so that evaluating it needs no copy of the checkpoint it was fine-tuned from.
ARCHITECTURE_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "dim_head", "intermediate_size",
    "max_length", "norm_eps", "rope_theta", "pad_token_id", "classifier_dropout", "tie_word_embeddings",
)  # fmt: skip
# Set while validate, test or predict build a model whose every weight their checkpoint restores.
_checkpoint_architecture: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "checkpoint_architecture", default=None
)


def architecture(model: PreTrainedModel) -> dict[str, Any]:
    """The ``ARCHITECTURE_FIELDS`` of ``model``'s config and the dtype of its weights, for a checkpoint."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {**{name: getattr(model.config, name) for name in ARCHITECTURE_FIELDS}, "dtype": dtype}


@contextlib.contextmanager
def architecture_from_checkpoint(saved: dict[str, Any] | None):
    """Within the block, `build_model` builds a ``pretrained`` model from ``saved`` (a checkpoint's
    ``neobert_config``) with fresh weights instead of loading them: the checkpoint restores every weight
    next, and the folder or hub id it was fine-tuned from may be gone or offline. None: load as usual."""
    token = _checkpoint_architecture.set(saved)
    try:
        yield
    finally:
        _checkpoint_architecture.reset(token)


def build_model(
    model_class: type[PreTrainedModel],
    pretrained: str | None,
    model_config: dict[str, Any] | None,
    allow_pickle_weights: bool = False,
    **config_overrides: Any,
) -> PreTrainedModel:
    """Load ``model_class`` from ``pretrained``, or initialise it randomly from ``model_config``.

    Args:
        model_class: A NeoBERT head class (``NeoBERTForSequenceClassification``, …).
        pretrained: A local checkpoint directory or a hub id; None with ``model_config``.
        model_config: ``NeoBERTConfig`` fields of a randomly initialised model (any size).
        allow_pickle_weights: Also load ``pytorch_model.bin`` (pickle) weights; safetensors only otherwise.
        config_overrides: Task fields set on the config either way (``num_labels``, ``id2label``, …).
    """
    # Before transformers sees it: it would fetch a flash-attn kernel from the hub. The device is not
    # known yet; a run on the CPU of a CUDA machine is refused in the task's setup.
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    if problem := backend_problem(config_overrides.get("attn_implementation"), device_type):
        raise ConfigError(problem)
    if model_config is not None and pretrained is not None:
        # One of them would be silently ignored (a preset composed before a task config, a fine-tuning
        # command that forgot model_config null), and config.yaml would record a checkpoint never loaded.
        raise ConfigError(
            f"model.init_args.pretrained ({pretrained!r}) and model.init_args.model_config are both set:"
            " set model_config to null to start from the checkpoint, or pretrained to null for a randomly"
            " initialised model."
        )
    if model_config is not None:
        check_config_fields(model_config)
        try:
            config = NeoBERTConfig(**{**model_config, **config_overrides})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.init_args.model_config: {error}") from None
        return model_class(config)
    if pretrained is None:
        raise ConfigError(
            "Set model.init_args.pretrained (a checkpoint directory or hub id) or"
            " model.init_args.model_config."
        )
    if (saved := _checkpoint_architecture.get()) is not None:
        shape = {name: value for name, value in saved.items() if name != "dtype"}
        # In the dtype the weights trained in (from_pretrained keeps a bf16 checkpoint's).
        return model_class(NeoBERTConfig(**{**shape, **config_overrides})).to(
            getattr(torch, saved.get("dtype", "float32"))
        )
    return load_pretrained(model_class, pretrained, allow_pickle_weights, config_overrides)


def is_local_path(pretrained: str) -> bool:
    """Whether ``pretrained`` can only be a folder on this machine: a hub id is "name" or "org/name"."""
    return pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1


def load_pretrained(
    model_class: type[PreTrainedModel],
    pretrained: str,
    allow_pickle_weights: bool,
    config_overrides: dict[str, Any],
) -> PreTrainedModel:
    """``model_class.from_pretrained(pretrained)``, from safetensors only unless ``allow_pickle_weights``."""
    path = os.path.expanduser(pretrained)
    if is_local_path(pretrained) and not os.path.isdir(path):
        raise MissingPathError(
            f"model.init_args.pretrained: the checkpoint directory {pretrained!r} does not exist."
        )
    if not allow_pickle_weights:
        check_no_pickle_only(path, pretrained)
    # use_safetensors=True: transformers would otherwise fall back to pytorch_model.bin, a pickle.
    safetensors_only = {} if allow_pickle_weights else {"use_safetensors": True}
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise ConfigError(
            f"model.init_args.pretrained {pretrained!r} has no config.json, which gives the model's shape;"
            " copy the one saved with these weights into the folder."
        )
    try:
        new_head = needs_new_head(path, pretrained, config_overrides.get("num_labels"))
        # The report lists head weights started afresh, which every fine-tuning has; `check_weights_fit`
        # refuses the backbone weights that would be missing or dropped, which it also lists.
        with load_report_quiet(True):
            model, loading = model_class.from_pretrained(
                path, ignore_mismatched_sizes=new_head, output_loading_info=True, **safetensors_only,
                **config_overrides,
            )  # fmt: skip
    except RuntimeError as error:
        if "ignore_mismatched_sizes" not in str(error):
            raise
        raise ConfigError(shape_mismatch_message(model_class, path, pretrained, config_overrides)) from None
    except OSError as error:
        if safetensors_only and "safetensors" in str(error):  # transformers found no model.safetensors
            raise ConfigError(
                f"model.init_args.pretrained {pretrained!r} has no safetensors weights (model.safetensors or"
                " its shards); a pickle (pytorch_model.bin) loads only with"
                " model.init_args.allow_pickle_weights true, since it can run code."
            ) from None
        raise MissingPathError(
            f"model.init_args.pretrained: could not load {pretrained!r} as a local directory or from the"
            f" Hugging Face hub ({error.__class__.__name__}); check the path, or the network and"
            " HF_HUB_OFFLINE."
        ) from error
    check_weights_fit(model, loading, pretrained)
    return model


# The backbone's own modules (NeoBERTModel's children); every other weight belongs to a task head.
BACKBONE_MODULES = ("encoder", "transformer_encoder", "layer_norm")


def backbone_keys(keys: list[str], model: PreTrainedModel) -> list[str]:
    """The backbone's weights among ``keys`` (named as in ``model``, or in a checkpoint with or without the
    ``model.`` prefix of the head classes)."""
    prefix = model.base_model_prefix + "."
    return sorted(key for key in keys if key.removeprefix(prefix).split(".")[0] in BACKBONE_MODULES)


def check_weights_fit(model: PreTrainedModel, loading: dict[str, list], pretrained: str) -> None:
    """Refuse a checkpoint whose backbone weights do not match its config.json: transformers would start the
    missing ones from random values and drop the extra ones, with a table among the head's expected rows."""
    missing = backbone_keys(loading.get("missing_keys") or [], model)
    unexpected = backbone_keys(loading.get("unexpected_keys") or [], model)
    # With a new classifier (ignore_mismatched_sizes), transformers re-initialises every weight of another
    # shape, the backbone's too, and lists it here: (name, shape in the checkpoint, shape in the model).
    mismatched = [entry for entry in loading.get("mismatched_keys") or [] if backbone_keys([entry[0]], model)]
    if mismatched:
        raise ConfigError(wrong_shape(pretrained, *mismatched[0]))
    layers = f"{model.config.num_hidden_layers} layer{'s' if model.config.num_hidden_layers != 1 else ''}"
    if missing:
        raise ConfigError(
            f"model.init_args.pretrained {pretrained!r} lacks backbone weights its config.json"
            f" ({layers}) calls for: {key_list(missing)}; they would start from random values."
        )
    if unexpected:
        raise ConfigError(
            f"model.init_args.pretrained {pretrained!r} holds backbone weights its config.json ({layers}) has"
            f" no place for: {key_list(unexpected)}; they would be dropped (is num_hidden_layers right?)."
        )


def key_list(keys: list[str]) -> str:
    more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
    return ", ".join(keys[:3]) + more


def shape_mismatch_message(
    model_class: type[PreTrainedModel], path: str, pretrained: str, config_overrides: dict[str, Any]
) -> str:
    """One sentence naming the first weight whose shape differs from what the config makes (transformers
    refuses with a pointer to a table it printed)."""
    config = NeoBERTConfig.from_pretrained(path, **config_overrides)
    with torch.device("meta"):
        expected = {name: tuple(value.shape) for name, value in model_class(config).state_dict().items()}
    prefix = model_class.base_model_prefix + "."
    for name, shape in checkpoint_shapes(path).items():
        wanted = expected.get(name, expected.get(prefix + name, expected.get(name.removeprefix(prefix))))
        if wanted is not None and wanted != shape:
            return wrong_shape(pretrained, name, shape, wanted)
    return f"model.init_args.pretrained {pretrained!r}: its weights' shapes do not match its config.json."


def wrong_shape(pretrained: str, name: str, saved: tuple[int, ...], wanted: tuple[int, ...]) -> str:
    return (
        f"model.init_args.pretrained {pretrained!r}: weight {name} has shape {'×'.join(map(str, saved))}"
        f" where its config.json makes {'×'.join(map(str, wanted))}; the weights and config.json come from"
        " different models."
    )


def checkpoint_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """Name → shape of every tensor in a local folder's safetensors files, read from their headers."""
    folder = Path(path)
    if not folder.is_dir():
        return {}
    index = folder / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else []
    shapes = {}
    for name in files or ["model.safetensors"]:
        if (folder / name).is_file():
            with safe_open(str(folder / name), framework="pt") as handle:
                shapes.update({key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()})  # noqa: SIM118
    return shapes


def check_no_pickle_only(path: str, pretrained: str) -> None:
    """Refuse a local folder whose weights are only pickle files, saying how to convert them or opt in."""
    if not os.path.isdir(path):
        return  # a hub id: use_safetensors=True refuses a repository without safetensors
    files = set(os.listdir(path))
    pickles = sorted(files & set(PICKLE_WEIGHTS))
    if not pickles or files & set(SAFETENSORS_WEIGHTS):
        return
    raise ConfigError(
        f"model.init_args.pretrained {pretrained!r} holds only pickle weights ({', '.join(pickles)}), which"
        ' can run code when loaded; convert them once to model.safetensors with python -c "from'
        f' neobert_tasks.model.loading import convert_pickle_weights; convert_pickle_weights({path!r})", or,'
        " if you trust the folder, set model.init_args.allow_pickle_weights true."
    )


@contextlib.contextmanager
def load_report_quiet(quiet: bool):
    """Within the block, transformers' warnings (its load report, a table of every weight it re-initialised,
    and a note that num_labels does not fit id2label) are not printed when ``quiet``: a new classifier is
    said in one warning by `needs_new_head`, backbone weights that do not fit by `check_weights_fit`."""
    report = logging.getLogger("transformers")
    level = report.level
    if quiet:
        report.setLevel(logging.ERROR)
    try:
        yield
    finally:
        report.setLevel(level)


def convert_pickle_weights(folder: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` beside a folder's ``pytorch_model.bin`` (or its shards); returns its path.

    The pickle is read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
    containers. Every tensor is copied on its own: tied weights (one storage under two names) and views
    are what ``safetensors`` refuses to write, and ``from_pretrained`` ties them again on loading.
    """
    folder = Path(folder)
    index = folder / "pytorch_model.bin.index.json"
    shards = ["pytorch_model.bin"]
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    tensors: dict[str, torch.Tensor] = {}
    for shard in shards:
        state = torch.load(folder / shard, map_location="cpu", weights_only=True)
        tensors.update({name: tensor.clone().contiguous() for name, tensor in state.items()})
    target = folder / "model.safetensors"
    save_file(tensors, str(target), metadata={"format": "pt"})  # transformers checks the format tag
    return target


def check_config_fields(model_config: dict[str, Any]) -> None:
    """Refuse a ``model_config`` key NeoBERTConfig does not define (it would be kept and silently unused)."""
    fields = {field.name for field in dataclasses.fields(NeoBERTConfig)}
    known = sorted(fields | set(NeoBERTConfig.attribute_map) | {"num_labels"})
    for name in model_config:
        if name == "attn_implementation":  # a task option, not a config field: say where it goes
            raise ConfigError(
                "model.init_args.model_config has a field 'attn_implementation'; the attention backend is"
                " chosen with model.init_args.attn_implementation instead."
            )
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else f"; NeoBERTConfig fields are {known}."
            raise ConfigError(
                f"model.init_args.model_config has a field '{name}' that NeoBERTConfig does not know{hint}"
            )


def needs_new_head(path: str, pretrained: str, num_labels: int | None) -> bool:
    """Whether ``pretrained`` holds a label classifier of another size than ``num_labels``; warns if so.

    Only the classifier is then initialised anew (``ignore_mismatched_sizes``); every other weight must
    still fit, which ``from_pretrained`` checks.
    """
    if num_labels is None:
        return False
    saved = NeoBERTConfig.from_pretrained(path)
    has_label_head = any(name.endswith(LABEL_HEAD_SUFFIXES) for name in saved.architectures or [])
    if not has_label_head or saved.num_labels == num_labels:
        return False
    names = f" ({', '.join(map(str, saved.id2label.values()))})" if saved.id2label else ""
    warnings.warn(
        f"model.init_args.pretrained {pretrained!r} has a classifier for {saved.num_labels} labels{names} but"
        f" the data has {num_labels}: the classifier starts from random weights, the rest of the model from"
        " the checkpoint.",
        stacklevel=3,
    )
    return True
