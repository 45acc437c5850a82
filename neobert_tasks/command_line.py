"""What a command line says before jsonargparse reads it: its config files, and where a key is set.

`NeoBERTArgumentParser.parse_args` runs two steps here first. `join_negative_values` keeps a negative number
such as ``-1e-3`` attached to its option, and `check_config_files` refuses a config file that does not
exist, is not YAML or is not a mapping, naming it: jsonargparse reads a file's text without its name, and
reports the three only in its own words. `where` tells an error message whether a key was typed on the
command line or set in which config file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from neobert_tasks.errors import ConfigError, MissingPathError

# argparse takes an argument starting with "-" for an option unless it looks like a negative number; its
# pattern (-1, -.5) misses exponents, so `--model.init_args.learning_rate -1e-3` lost its value to "expected
# one argument" and the value error that names the key never came.
NEGATIVE_NUMBER = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
# Options that take no value, whose next argument is never theirs.
FLAGS = ("--help",)


def join_negative_values(arguments: Sequence[str]) -> list[str]:
    """`arguments` with each negative number that follows a ``--option`` joined to it: ``--key=-1e-3``."""
    joined: list[str] = []
    for argument in arguments:
        previous = joined[-1] if joined else ""
        takes_value = previous.startswith("--") and "=" not in previous and previous not in ("--", *FLAGS)
        if takes_value and isinstance(argument, str) and NEGATIVE_NUMBER.match(argument):
            joined[-1] = f"{previous}={argument}"
        else:
            joined.append(argument)
    return joined


def config_files(arguments: Sequence[str]) -> list[str]:
    """The values given to ``--config`` (or ``-c``), in command-line order."""
    paths = []
    for position, argument in enumerate(arguments):
        if argument.startswith("--config="):
            paths.append(argument.split("=", 1)[1])
        elif argument in ("--config", "-c") and position + 1 < len(arguments):
            paths.append(arguments[position + 1])
    return paths


def yaml_problem(error: yaml.YAMLError) -> str:
    """``mapping values are not allowed here at line 3, column 11``: what is wrong with a YAML text, where."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return str(error)
    mark = error.problem_mark or error.context_mark
    place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = ""
    if error.context and error.context_mark and error.context_mark is not mark:
        context = f" ({error.context} at line {error.context_mark.line + 1})"
    return f"{error.problem or error.context}{place}{context}"


def check_config_files(arguments: Sequence[str]) -> None:
    """Refuse a ``--config`` value that is not an existing file of a YAML mapping (nor a mapping itself)."""
    for value in config_files(arguments):
        path = Path(value)
        if path.is_file():
            try:
                content = yaml.safe_load(path.read_text())
            except yaml.YAMLError as error:
                raise ConfigError(
                    f"Config file '{value}' is not valid YAML: {yaml_problem(error)}."
                ) from None
            if not isinstance(content, dict):
                name = type(content).__name__
                found = (
                    "an empty file" if content is None else f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
                )
                raise ConfigError(
                    f"Config file '{value}' must hold keys with values (a YAML mapping such as"
                    f" 'trainer: {{max_epochs: 3}}'), not {found}."
                )
            continue
        if path.exists():
            raise ConfigError(f"Config file '{value}' is a directory; give a YAML file.")
        inline = read_yaml(value)
        if isinstance(inline, dict):  # jsonargparse takes a mapping typed on the command line too
            continue
        if isinstance(inline, (list, int, float, bool)):
            raise ConfigError(f"A --config value must be a YAML mapping of keys to values, not {value!r}.")
        raise MissingPathError(f"Config file '{value}' does not exist.{where_configs_are(path)}")


def read_yaml(value: str, from_file: bool = False) -> Any:
    """A ``--config`` value read as YAML text (`from_file`: the content of the file it names), or None when
    it cannot be read as YAML (another error reports that)."""
    try:
        return yaml.safe_load(Path(value).read_text() if from_file else value)
    except (OSError, yaml.YAMLError):
        return None


def has_key(content: Any, parts: Sequence[str]) -> bool:
    """Whether nested mappings hold the key path `parts`; a list (of callbacks, say) holds it in any item."""
    if not parts:
        return True
    if isinstance(content, list):
        return any(has_key(item, parts) for item in content)
    return isinstance(content, dict) and parts[0] in content and has_key(content[parts[0]], parts[1:])


def where(key: str, arguments: Sequence[str]) -> str:
    """Where `key` is set, as a phrase to append: on the command line, in config file 'X', or ""."""
    # jsonargparse accepts `model.learning_rate` for `model.init_args.learning_rate`.
    spellings = {key, key.replace(".init_args.", ".")}
    # `--model x.Y` sets model.class_path; `--trainer.callbacks+=EarlyStopping` appends to trainer.callbacks.
    typed = spellings | {key.removesuffix(".class_path")}
    for argument in arguments:
        if argument.startswith("--") and argument[2:].split("=", 1)[0].rstrip("+") in typed:
            return " on the command line"
    for path in reversed(config_files(arguments)):  # the last file setting a key is the one that counts
        content = read_yaml(path, from_file=True)
        if any(has_key(content, spelling.split(".")) for spelling in spellings):
            return f" in config file '{path}'"
    return ""


def where_configs_are(path: Path) -> str:
    """For a missing ``configs/…`` file where there is no configs folder: where the configs come from."""
    if path.parts[:1] != ("configs",) or Path("configs").is_dir():
        return ""
    return (
        " The configs/ folder comes with the source repository, not with an installed package: run from a"
        " clone of it (README.md), or give the file's full path."
    )
