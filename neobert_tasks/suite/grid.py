"""Hyperparameter grids for the suite: a YAML file of config keys and the values to try for each.

A grid file has one section, ``parameters``, mapping a dotted key of the neobert_tasks command line to
the list of values to try; every combination (the Cartesian product, in file order) is a grid point::

    parameters:
      model.init_args.learning_rate: [5.0e-6, 1.0e-5]
      data.init_args.batch_size: [16, 32]
      model.init_args.weight_decay: [1.0e-2, 1.0e-5]

Each point becomes ``--<key> <value>`` arguments of its runs and a folder name built from short names
(``lr5e-06_batch16_wd0.01``), so that finished points are found again when a suite resumes.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from neobert_tasks.errors import ConfigError, MissingPathError

# Short names of the keys the paper's grid varies; any other key is named by its last component.
SHORT_NAMES = {
    "model.init_args.learning_rate": "lr",
    "data.init_args.batch_size": "batch",
    "model.init_args.weight_decay": "wd",
}
# Config sections a grid key may belong to (those of the neobert_tasks command line).
SECTIONS = ("model", "data", "trainer", "checkpoint", "export", "seed_everything")


@dataclass(frozen=True)
class GridPoint:
    """One combination of grid values: its folder name and its ``(dotted key, value)`` settings.

    The default point (no grid) has no name and no settings: the task config's own values.
    """

    name: str | None = None
    settings: tuple[tuple[str, object], ...] = ()

    def arguments(self) -> list[str]:
        """The point's settings as command-line arguments: ``--<key> <value>`` for each."""
        return [part for key, value in self.settings for part in (f"--{key}", format_value(value))]


DEFAULT_POINT = GridPoint()


def format_value(value: object) -> str:
    """A grid value as the command line and folder names spell it (``5e-06``, ``32``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def point_name(settings: tuple[tuple[str, object], ...]) -> str:
    """Folder name of a grid point, e.g. ``lr5e-06_batch16_wd1e-05``; unsafe characters become ``-``."""
    parts = [
        f"{SHORT_NAMES.get(key, key.rsplit('.', 1)[-1])}{format_value(value)}" for key, value in settings
    ]
    return re.sub(r"[^A-Za-z0-9.+_-]", "-", "_".join(parts))


def load_grid(path: str | Path) -> list[GridPoint]:
    """Every point of the grid file at ``path``, in file order (the last key varies fastest).

    Raises `MissingPathError` when the file is absent and `ConfigError` naming the key when a section or
    a value list is malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"--grid: the grid file '{path}' does not exist.")
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"--grid: '{path}' is not valid YAML ({error.__class__.__name__}).") from None
    if not isinstance(content, dict) or not isinstance(content.get("parameters"), dict):
        raise ConfigError(f"--grid: '{path}' needs a 'parameters' section mapping config keys to lists.")
    parameters = content["parameters"]
    for key, values in parameters.items():
        _check_parameter(path, key, values)
    combinations = itertools.product(*parameters.values())
    points = [tuple(zip(parameters, values, strict=True)) for values in combinations]
    return [GridPoint(point_name(settings), settings) for settings in points]


def _check_parameter(path: Path, key: object, values: object) -> None:
    """Refuse a key outside the command line's sections and a value list that is empty or nested."""
    if not isinstance(key, str) or key.split(".", 1)[0] not in SECTIONS:
        raise ConfigError(
            f"--grid: key '{key}' in '{path}' is not a dotted config key in one of the sections "
            f"{', '.join(SECTIONS)}."
        )
    if not isinstance(values, list) or not values:
        raise ConfigError(f"--grid: '{key}' in '{path}' must be a non-empty list of values.")
    if any(isinstance(value, (list, dict)) or value is None for value in values):
        raise ConfigError(f"--grid: '{key}' in '{path}' may only list numbers, strings or booleans.")
