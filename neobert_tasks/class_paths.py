"""Classes named by import path in a config: importing them, the keys they accept, the classes that fit.

The error messages of `neobert_tasks.parse_errors` suggest valid names from here, and
`check_checkpoint_class` refuses a ``--ckpt_path`` checkpoint written by another task class than the
config's ``model.class_path``.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

import lightning as L
from jsonargparse import ArgumentParser

from neobert_tasks.command_line import where
from neobert_tasks.errors import ConfigError


def import_class(path: str) -> type | None:
    """The class at the dotted ``path``, or None when it cannot be imported (another error reports that)."""
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except Exception:  # noqa: BLE001 - any import failure means "cannot tell"
        return None
    return found if isinstance(found, type) else None


def option_names(parser: ArgumentParser) -> list[str]:
    """Every key a parser accepts (``trainer.max_epochs``, ...), as a config file or ``--key`` spells it."""
    try:
        return list(parser.get_defaults(skip_validation=True).keys())
    except Exception:  # noqa: BLE001 - a suggestion is a courtesy; the error itself is reported regardless
        return []


def class_argument_names(class_path: str) -> list[str]:
    """The init arguments jsonargparse accepts for the class at `class_path` (empty if it cannot say)."""
    found = import_class(class_path)
    if found is None:
        return []
    try:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(found)
    except Exception:  # noqa: BLE001 - a suggestion is a courtesy; the error itself is reported regardless
        return []
    return option_names(parser)


def module_class_names(module_name: str) -> list[str] | None:
    """The capitalised names a module defines, or None when it cannot be imported."""
    try:
        return [name for name in dir(importlib.import_module(module_name)) if name[:1].isupper()]
    except Exception:  # noqa: BLE001 - an unimportable module: no names
        return None


def subclass_paths(base_path: str) -> list[str]:
    """The classes derived from the class at ``base_path`` that its package exports, as import paths:
    ``neobert_tasks.tasks.SequenceClassificationTask``, … for ``neobert_tasks.tasks.base.NeoBERTTask``."""
    base = import_class(base_path)
    package_name = base_path.rpartition(".")[0].rpartition(".")[0]
    try:
        package = importlib.import_module(package_name)
    except Exception:  # noqa: BLE001 - no list, the message still names the base class
        return []
    names = getattr(package, "__all__", None) or dir(package)
    return [
        f"{package_name}.{name}"
        for name in sorted(names)
        if isinstance(getattr(package, name, None), type)
        and base is not None
        and issubclass(getattr(package, name), base)
        and getattr(package, name) is not base
    ]


def lightning_kind(base_path: str | None) -> str:
    """`` (a LightningModule)`` or `` (a LightningDataModule)`` for a base class of either, else ""."""
    base = import_class(base_path) if base_path else None
    for kind in (L.LightningModule, L.LightningDataModule):
        if base is not None and issubclass(base, kind) and base is not kind:
            return f" (a {kind.__name__})"
    return ""


def check_checkpoint_class(
    saved: str | None, configured: str | None, checkpoint: str, arguments: Sequence[str]
) -> None:
    """Refuse a checkpoint saved by another task class (`saved`) than the config's ``model.class_path``.

    LightningCLI rebuilds the model from a ``--ckpt_path`` checkpoint's saved class and hyperparameters,
    silently swapping the config's class for the saved one, whose checks then fail on the config's data (a
    NER task refusing GLUE's labels) deep inside a traceback that never mentions the checkpoint.
    """
    if not saved or not configured:
        return
    saved_class, configured_class = import_class(saved), import_class(configured)
    if saved_class is None or configured_class is None or saved_class is configured_class:
        return
    raise ConfigError(
        f"Checkpoint '{checkpoint}' was trained with {saved}, not with model.class_path"
        f" {configured}{where('model.class_path', arguments)}; give it the config of the run that wrote"
        f" it (--config <run>/config.yaml), or give a checkpoint of a {configured_class.__name__} run."
    )
