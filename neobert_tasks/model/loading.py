"""Build a NeoBERT model with a given head from a checkpoint (local or hub) or from a config.

This is the one place where the tasks turn their YAML strings (``pretrained``, ``model_config``)
into a model, so that every task reports a wrong path or key the same way.

A checkpoint fine-tuned for another task keeps its backbone but not its classifier when the label count
differs (MNLI's three classes → RTE's two, as the NeoBERT paper transfers them): the head is initialised
anew, with a warning that says so.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import warnings
from typing import Any

from transformers import PreTrainedModel

from neobert_tasks.errors import ConfigError, MissingPathError
from neobert_tasks.model.configuration import NeoBERTConfig

OFFICIAL_CHECKPOINT = "chandar-lab/NeoBERT"
# Head classes whose ``classifier`` has one output per label: a checkpoint of one of them fits another
# label count only with a new classifier.
LABEL_HEAD_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification")


def build_model(
    model_class: type[PreTrainedModel],
    pretrained: str | None,
    model_config: dict[str, Any] | None,
    **config_overrides: Any,
) -> PreTrainedModel:
    """Load ``model_class`` from ``pretrained``, or initialise it randomly from ``model_config``.

    Args:
        model_class: A NeoBERT head class (``NeoBERTForSequenceClassification``, …).
        pretrained: A local checkpoint directory or a hub id; ignored when ``model_config`` is given.
        model_config: ``NeoBERTConfig`` fields of a randomly initialised model (any size).
        config_overrides: Task fields set on the config either way (``num_labels``, ``id2label``, …).
    """
    if model_config is not None:
        check_config_fields(model_config)
        try:
            config = NeoBERTConfig(**{**model_config, **config_overrides})
        except (TypeError, ValueError) as error:
            raise ConfigError(f"model.model_config: {error}") from None
        return model_class(config)
    if pretrained is None:
        raise ConfigError("Set model.pretrained (a checkpoint directory or hub id) or model.model_config.")
    path = os.path.expanduser(pretrained)
    # A hub id is "name" or "org/name"; anything else can only be a directory on this machine.
    looks_local = pretrained.startswith((".", "/", "~")) or pretrained.count("/") > 1
    if looks_local and not os.path.isdir(path):
        raise MissingPathError(f"model.pretrained: the checkpoint directory {pretrained!r} does not exist.")
    try:
        new_head = needs_new_head(path, pretrained, config_overrides.get("num_labels"))
        return model_class.from_pretrained(path, ignore_mismatched_sizes=new_head, **config_overrides)
    except OSError as error:
        raise MissingPathError(
            f"model.pretrained: could not load {pretrained!r} as a local directory or from the Hugging Face "
            f"hub ({error.__class__.__name__}); check the path, or the network and HF_HUB_OFFLINE."
        ) from error


def check_config_fields(model_config: dict[str, Any]) -> None:
    """Refuse a ``model_config`` key NeoBERTConfig does not define (it would be kept and silently unused)."""
    known = {field.name for field in dataclasses.fields(NeoBERTConfig)}
    known |= set(NeoBERTConfig.attribute_map) | {"num_labels"}
    for name in model_config:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = (
                f"; did you mean '{close[0]}'?" if close else f"; NeoBERTConfig fields are {sorted(known)}."
            )
            raise ConfigError(
                f"model.model_config has a field '{name}' that NeoBERTConfig does not know{hint}"
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
        f"model.pretrained {pretrained!r} has a classifier for {saved.num_labels} labels{names} but the data"
        f" has {num_labels}: the classifier starts from random weights, the rest of the model from the"
        " checkpoint.",
        stacklevel=3,
    )
    return True
