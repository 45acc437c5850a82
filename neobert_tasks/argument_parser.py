"""The command line's argument parser, whose errors are one sentence naming the key, the value and where.

jsonargparse reports a mistake by printing the usage and a nested, multi-line account of every type it
tried for the value. `NeoBERTArgumentParser.error` turns that account into a `ConfigError` (a
`MissingPathError` for a config file that does not exist) naming the key, the value, the config file or
command line that holds it and, for an unknown key, the closest valid name; `cli.main` prints it and exits
with status 2. Parsers nested inside jsonargparse (one per class of a union, tried in turn) keep raising
their own errors, which jsonargparse catches.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import yaml
from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser

from neobert_tasks.errors import ConfigError, MissingPathError, UserInputError

# Keys whose value is one class given by class_path/init_args; other keys holding classes (trainer.callbacks,
# trainer.logger) hold lists of them, where "init_args" is not part of the key a user types.
SINGLE_CLASS_KEYS = ("model", "data")
CLASS_EXAMPLES = {
    "model": "neobert_tasks.tasks.SequenceClassificationTask",
    "data": "neobert_tasks.data.GLUEDataModule",
}
CLASS_PROBLEM = re.compile(r"^(?P<indent>\s*)- Problem with given class_path '(?P<class_path>[^']+)':\s*$")
# argparse takes an argument starting with "-" for an option unless it matches this; its own pattern
# (-1, -.5) misses exponents, so `--model.init_args.learning_rate -1e-3` lost its value to "expected one
# argument" and the value error that names the key never came.
NEGATIVE_NUMBER = re.compile(r"^-(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")
# Subclasses listed by name in a message; past this many, the first ones stand for the rest.
MAX_LISTED_CLASSES = 8


class NeoBERTArgumentParser(LightningArgumentParser):
    """`LightningArgumentParser` without abbreviated options, whose errors are one-sentence `ConfigError`s."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # argparse would take `--trainer.max_epoch` for max_epochs on the command line while the same key is
        # an error in a YAML file, and an option added later can make a working abbreviation ambiguous.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER  # argparse's attribute; no public setter

    def parse_object(self, obj: Any, namespace: Any = None, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, dict) and namespace is not None:
            arguments = [str(argument) for argument in getattr(self, "args", None) or []]
            check_checkpoint_class(obj, namespace, arguments)
        return super().parse_object(obj, namespace, *args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)  # a nested parser: jsonargparse catches this and tries the next type
        parser = getattr(ex, "subcommand_parser", None) or self
        arguments = [str(argument) for argument in getattr(self, "args", None) or []]
        raise explain(message, ex, parser, arguments) from None


def explain(
    message: str, error: Exception | None, parser: ArgumentParser, arguments: Sequence[str]
) -> UserInputError:
    """The one-sentence error for jsonargparse's `message`, given the parser and the command line."""
    for pattern, explainer in EXPLAINERS:
        match = re.search(pattern, message, flags=re.MULTILINE)
        if match:
            return explainer(match, message, error, parser, list(arguments))
    return ConfigError(f"Invalid configuration: {one_line(message)}")


# ----------------------------------------------------------------------------------------------------------
# A checkpoint of another task.


def import_class(path: str) -> type | None:
    """The class at the dotted ``path``, or None when it cannot be imported (another error reports that)."""
    module_name, _, name = path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except Exception:  # noqa: BLE001 - any import failure means "cannot tell"
        return None
    return found if isinstance(found, type) else None


def check_checkpoint_class(obj: dict, namespace: Any, arguments: Sequence[str]) -> None:
    """Refuse a ``--ckpt_path`` checkpoint saved by another task class than the config's ``model.class_path``.

    LightningCLI's ``_parse_ckpt_path`` passes the checkpoint's hyperparameters here as
    ``{subcommand: {"model": {"class_path": <saved class>, "dict_kwargs": {...}}}}`` and would silently
    swap the config's class for the saved one, whose checks then fail on the config's data (a NER task
    refusing GLUE's labels) deep inside a traceback that never mentions the checkpoint.
    """
    for subcommand, section in obj.items():
        model = section.get("model") if isinstance(section, dict) else None
        saved = model.get("class_path") if isinstance(model, dict) else None
        config = namespace.get(subcommand) if hasattr(namespace, "get") else None
        configured = config.get("model.class_path") if config is not None else None
        if not saved or not configured:
            continue
        saved_class, configured_class = import_class(saved), import_class(configured)
        if saved_class is None or configured_class is None or saved_class is configured_class:
            continue
        raise ConfigError(
            f"Checkpoint '{config.get('ckpt_path')}' was trained with {saved}, not with model.class_path"
            f" {configured}{where('model.class_path', arguments)}; give it the config of the run that wrote"
            f" it (--config <run>/config.yaml), or give a checkpoint of a {configured_class.__name__} run."
        )


# ----------------------------------------------------------------------------------------------------------
# Where a key is set, and which valid key is closest to a wrong one.


def one_line(text: str) -> str:
    """`text` with its lines joined and runs of whitespace collapsed."""
    return " ".join(text.split())


def config_files(arguments: Sequence[str]) -> list[str]:
    """The paths given to ``--config`` (or ``-c``), in command-line order."""
    paths = []
    for position, argument in enumerate(arguments):
        if argument.startswith("--config="):
            paths.append(argument.split("=", 1)[1])
        elif argument in ("--config", "-c") and position + 1 < len(arguments):
            paths.append(arguments[position + 1])
    return paths


def read_yaml(path: str) -> Any:
    """A config file's content, or None when it cannot be read as YAML (another error reports that)."""
    try:
        return yaml.safe_load(Path(path).read_text())
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
    for argument in arguments:
        # `--trainer.callbacks+=EarlyStopping` appends to a list: the key is trainer.callbacks.
        if argument.startswith("--") and argument[2:].split("=", 1)[0].rstrip("+") in spellings:
            return " on the command line"
    for path in reversed(config_files(arguments)):  # the last file setting a key is the one that counts
        content = read_yaml(path)
        if any(has_key(content, spelling.split(".")) for spelling in spellings):
            return f" in config file '{path}'"
    return ""


def option_names(parser: ArgumentParser) -> list[str]:
    """Every ``--name`` a parser accepts, without the dashes."""
    return [
        option[2:]
        for action in parser._actions  # argparse's list of options; it has no public accessor
        for option in action.option_strings
        if option.startswith("--") and not option.endswith(("+", ".help")) and option != "--help"
    ]


def class_argument_names(class_path: str) -> list[str]:
    """The init arguments jsonargparse accepts for the class at `class_path` (empty if it cannot say)."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(getattr(importlib.import_module(module_name), class_name))
    except Exception:  # noqa: BLE001 - a suggestion is a courtesy; the error itself is reported regardless
        return []
    return option_names(parser)


def suggestion(name: str, candidates: Sequence[str], prefix: str = "") -> str:
    """A clause to append: did you mean the closest candidate, else the candidates sharing the name's start
    or, when there are few, all of them."""
    if "." in name:  # prefer keys of the same section: trainer.max_epoch -> trainer.max_epochs
        section = name.split(".", 1)[0] + "."
        candidates = [candidate for candidate in candidates if candidate.startswith(section)] or candidates
    extensions = [candidate for candidate in candidates if candidate.startswith(name)]
    if 1 < len(extensions) <= 6:  # an abbreviation: trainer.limit -> trainer.limit_train_batches, ...
        return f"; did you mean one of {', '.join(prefix + candidate for candidate in extensions)}?"
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if close:
        return f"; did you mean '{prefix}{close[0]}'?"
    if 0 < len(candidates) <= 30:
        return f"; valid names are {', '.join(sorted(candidates))}."
    return "; run with --help to list the valid keys."


def with_period(sentence: str) -> str:
    return sentence if sentence.endswith((".", "?")) else sentence + "."


# ----------------------------------------------------------------------------------------------------------
# Explainers: each turns one kind of jsonargparse message into one sentence.

Explainer = Callable[[re.Match, str, "Exception | None", ArgumentParser, list[str]], UserInputError]


def missing_file(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    resolved = Path(match["path"]).resolve()
    typed = next(
        (path for path in config_files(arguments) if Path(path).resolve() == resolved), match["path"]
    )
    if match["key"] == "config":
        return MissingPathError(f"Config file '{typed}' does not exist.")
    return MissingPathError(f"The file '{typed}' given for '{match['key']}' does not exist.")


def yaml_syntax_error(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    # jsonargparse reads the YAML text without its file name; reading each config file again finds it.
    for path in config_files(arguments):
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.MarkedYAMLError as problem:
            mark = problem.problem_mark or problem.context_mark
            context = ""
            if problem.context and problem.context_mark and problem.context_mark is not mark:
                context = f" ({problem.context} at line {problem.context_mark.line + 1})"
            return ConfigError(
                f"Config file '{path}' is not valid YAML: {problem.problem} at line {mark.line + 1},"
                f" column {mark.column + 1}{context}."
            )
        except (OSError, yaml.YAMLError):
            continue
    return ConfigError(f"A value on the command line is not valid YAML: {one_line(message.split(':', 1)[1])}")


def not_a_mapping(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    for path in config_files(arguments):
        content = read_yaml(path)
        if content is not None and not isinstance(content, dict):
            return ConfigError(
                f"Config file '{path}' must hold keys with values (a YAML mapping such as"
                f" 'trainer: {{max_epochs: 3}}'), not a {type(content).__name__}."
            )
    return ConfigError(f"A --config value must be a YAML mapping of keys to values, not {match['value']!r}.")


def unknown_key(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    key = match["key"]
    return ConfigError(
        with_period(f"Unknown key '{key}'{where(key, arguments)}{suggestion(key, option_names(parser))}")
    )


def unrecognized_argument(
    match: re.Match, message: str, error, parser, arguments: list[str]
) -> UserInputError:
    first = match["rest"].split()[0]
    if not first.startswith("-"):
        return ConfigError(
            f"Unexpected argument '{first}' on the command line; options start with '--'"
            " (e.g. --trainer.max_epochs 3) and the subcommand (fit, validate, test, predict) comes first."
        )
    key = first.lstrip("-").split("=", 1)[0]
    return ConfigError(
        with_period(f"Unknown key '{key}' on the command line{suggestion(key, option_names(parser))}")
    )


def not_an_import_path(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    outer = outer_key(message)
    example = CLASS_EXAMPLES.get(outer, "lightning.pytorch.callbacks.EarlyStopping")
    return ConfigError(
        f"Unknown class '{match['value']}' for '{outer}'{where(class_path_key(outer), arguments)}; give its"
        f" import path (package.module.ClassName, e.g. {example})."
    )


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


def not_a_subclass(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    """A class path that imports but names something else than the key takes (``builtins.print`` for
    ``model``): jsonargparse words it as a type error of the whole key, "expected None"."""
    outer = outer_key(message)
    value = match["value"] or given_class_path(message)
    base_path = re.search(rf"<class '(?P<path>[\w.]*\b{match['base']})'>", message)
    choices = subclass_paths(base_path["path"]) if base_path else []
    listed = ", ".join(choices[:MAX_LISTED_CLASSES]) + (", …" if len(choices) > MAX_LISTED_CLASSES else "")
    options = f"one of {listed} or a subclass of {match['base']}" if choices else f"a {match['base']}"
    return ConfigError(
        f"{class_path_key(outer)} must name a subclass of {match['base']}{kind_of(base_path)}, not"
        f" {value!r}{where(class_path_key(outer), arguments)}; give {options}."
    )


def given_class_path(message: str) -> str:
    """The class path in jsonargparse's ``Given value:`` line (a string, a NestedArg or a dict)."""
    given = re.search(r"Given value: (.*)$", message, flags=re.MULTILINE)
    text = given[1].strip() if given else ""
    nested = re.search(r"(?:val=|'class_path': )'([^']+)'", text)
    return nested[1] if nested else text


def kind_of(base_path: re.Match | None) -> str:
    """`` (a LightningModule)`` or `` (a LightningDataModule)`` for a base class of either, else ""."""
    import lightning as L  # noqa: PLC0415 - only needed for this message

    base = import_class(base_path["path"]) if base_path else None
    for kind in (L.LightningModule, L.LightningDataModule):
        if base is not None and issubclass(base, kind) and base is not kind:
            return f" (a {kind.__name__})"
    return ""


def class_path_key(outer: str) -> str:
    """The key that names the class of `outer`: ``model.class_path``, or the list key itself."""
    return f"{outer}.class_path" if outer in SINGLE_CLASS_KEYS else outer


def unknown_subcommand(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    choices = [choice.strip(" '") for choice in match["choices"].split(",")]
    return ConfigError(
        with_period(f"Unknown subcommand '{match['value']}'{suggestion(match['value'], choices)}")
    )


def missing_subcommand(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    choices = ", ".join(match["choices"].split(","))
    return ConfigError(
        f"Give a subcommand first ({choices}), e.g. python -m neobert_tasks fit --config <file>."
    )


def required_key(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    key = match["key"]
    return ConfigError(f"'{key}' is required but not set; give it in a config file or as --{key}.")


def outer_key(message: str) -> str:
    """The key of the first ``Parser key "..."`` line of a message ("" when it has none)."""
    match = re.search(r'Parser key "([^"]+)"', message)
    return match[1] if match else ""


def problem_block(message: str) -> tuple[str, str] | None:
    """The class path and the (dedented) explanation of the first class jsonargparse tried for a value."""
    lines = message.splitlines()
    for index, line in enumerate(lines):
        match = CLASS_PROBLEM.match(line)
        if not match:
            continue
        depth = len(match["indent"])
        block = []
        for inner in lines[index + 1 :]:
            if inner.strip() and len(inner) - len(inner.lstrip()) <= depth:
                break
            block.append(inner)
        indent = min((len(inner) - len(inner.lstrip()) for inner in block if inner.strip()), default=0)
        return match["class_path"], "\n".join(inner[indent:] for inner in block).strip()
    return None


def type_name(text: str) -> str:
    """A type as jsonargparse names it, readable: ``<class 'int'>`` is int, ``<class 'NoneType'>`` None."""
    text = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", text.strip())
    return "None" if text == "NoneType" else text


def value_and_expectation(text: str) -> tuple[str | None, str]:
    """The value jsonargparse was given and what it expected, from the explanation of a wrong value."""
    given = re.search(r"(?:Given|Got) value: (.*)$", text, flags=re.MULTILINE)
    expected = re.findall(r"Expected an? (.+?)(?:\. Got value: .*)?$", text, flags=re.MULTILINE)
    # Several Literal types (trainer.precision has three) read as one list of choices.
    choices = [item for name in expected for item in re.findall(r"^typing\.Literal\[(.*)\]$", name)]
    names = [type_name(name) for name in expected if not name.startswith("typing.Literal[")]
    names = list(dict.fromkeys(([f"one of {', '.join(choices)}"] if choices else []) + names))
    if names:
        expectation = "expected " + " or ".join(names)
    else:  # another kind of explanation: its first line after the key
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        expectation = one_line(lines[0]).lstrip("- ") if lines else "not accepted"
    return (given[1].strip() if given else None), expectation


def wrong_value(key_text: str, location: str, text: str) -> ConfigError:
    value, expectation = value_and_expectation(text)
    value_text = f"Invalid value {value!r}" if value is not None else "Invalid value"
    return ConfigError(with_period(f"{value_text} for {key_text}{location}: {expectation}"))


def wrong_top_level_value(
    match: re.Match, message: str, error, parser, arguments: list[str]
) -> UserInputError:
    key = match["key"]
    return wrong_value(f"'{key}'", where(key, arguments), message)


def class_problem(match: re.Match, message: str, error, parser, arguments: list[str]) -> UserInputError:
    """A value given to a class (model, data, a callback): unknown or missing init argument, wrong type, or a
    class path that cannot be imported."""
    outer = outer_key(message)
    class_path, block = problem_block(message)
    class_name = class_path.rpartition(".")[2]
    single = outer in SINGLE_CLASS_KEYS
    prefix = f"{outer}.init_args." if single else ""

    def describe(name: str) -> tuple[str, str]:
        if single:
            return f"'{prefix}{name}'", where(prefix + name, arguments)
        return f"'{name}' of {class_name} in '{outer}'", where(f"{outer}.init_args.{name}", arguments)

    unknown = re.match(r"Option '(?P<name>[^']+)' is not accepted", block)
    if unknown:
        key_text, location = describe(unknown["name"])
        hint = suggestion(unknown["name"], class_argument_names(class_path), prefix)
        return ConfigError(with_period(f"Unknown key {key_text}{location}{hint}"))
    required = re.match(r"the following arguments are required: (?P<names>.*)", block)
    if required:
        names = [name.strip() for name in required["names"].split(",")]
        key_text, location = describe(names[0])
        return ConfigError(f"{key_text} is required by {class_name} but not set{location}.")
    inner = re.match(r'Parser key "(?P<name>[^"]+)":', block)
    if inner:
        key_text, location = describe(inner["name"])
        return wrong_value(key_text, location, block)
    return ConfigError(
        f"Cannot use class_path '{class_path}' for '{outer}'{where(class_path_key(outer), arguments)}:"
        f" {one_line(block).rstrip('.')}{class_suggestion(class_path)}"
    )


def class_suggestion(class_path: str) -> str:
    """The suggestion clause for a class path whose module exists but lacks the class."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        names = [name for name in dir(importlib.import_module(module_name)) if name[:1].isupper()]
    except Exception:  # noqa: BLE001 - an unimportable module: no suggestion
        return "."
    return suggestion(class_name, names, f"{module_name}.")


EXPLAINERS: list[tuple[str, Explainer]] = [
    (r'Parser key "(?P<key>[^"]+)": File does not exist: \'(?P<path>[^\']+)\'', missing_file),
    (r"^Problems parsing config", yaml_syntax_error),
    (r"^Unexpected config: (?P<value>.*)", not_a_mapping),
    (r"does not accept option '(?P<key>[^']+)'", unknown_key),
    (r"^unrecognized arguments: (?P<rest>.+)$", unrecognized_argument),
    (r"invalid choice: '(?P<value>[^']*)' \(choose from (?P<choices>[^)]*)\)", unknown_subcommand),
    (r'expected "subcommand" to be one of \{(?P<choices>[^}]*)\}', missing_subcommand),
    (CLASS_PROBLEM.pattern, class_problem),
    (r"Import path (?:(?P<value>\S+) )?does not correspond to a subclass of (?P<base>\w+)", not_a_subclass),
    (r"Expected a dot import path string: (?P<value>\S+)", not_an_import_path),
    (r'Key "(?P<key>[^"]+)" is required', required_key),
    (r'^Parser key "(?P<key>[^"]+)":', wrong_top_level_value),
]
