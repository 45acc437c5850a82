"""Build a NeoBERT model with a given head from a checkpoint (local or hub) or from a config.

This is the one place where the tasks turn their YAML strings (``pretrained``, ``model_config``)
into a model, so that every task reports a wrong path or key the same way.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import PreTrainedModel

from neobert_tasks.errors import ConfigError, MissingPathError
from neobert_tasks.model.configuration import NeoBERTConfig

OFFICIAL_CHECKPOINT = "chandar-lab/NeoBERT"


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
        try:
            config = NeoBERTConfig(**{**model_config, **config_overrides})
        except TypeError as error:
            raise ConfigError(
                f"model.model_config has a field NeoBERTConfig does not know: {error}"
            ) from None
        except ValueError as error:
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
        return model_class.from_pretrained(path, **config_overrides)
    except OSError as error:
        raise MissingPathError(
            f"model.pretrained: could not load {pretrained!r} as a local directory or from the Hugging Face "
            f"hub ({error.__class__.__name__}); check the path, or the network and HF_HUB_OFFLINE."
        ) from error
