"""jsonargparse's report of a mistake, turned into one sentence naming the key, the value and where it is set.

jsonargparse reports a mistake as a chain of exceptions, each raised from the next: a TypeError per level of
keys (``Parser key "model"``), a ValueError per union or class it tried (only the first type tried is
chained), down to what went wrong: a KeyError for an unknown key, a YAML error, an ImportError, a ValueError
for a value of the wrong type. `read_failure` walks the chain; each explainer recognises one kind of mistake
by those exception types, and reads the key, class path and value from their text, which is all jsonargparse
gives (`WORDING`). `explain` returns the first explainer's sentence, with the closest valid name for an
unknown one.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import yaml
from jsonargparse import ArgumentError, ArgumentParser
from lightning.pytorch.cli import LightningCLI

from neobert_tasks.class_paths import (
    class_argument_names,
    lightning_kind,
    module_class_names,
    option_names,
    subclass_paths,
)
from neobert_tasks.command_line import where, yaml_problem
from neobert_tasks.errors import ConfigError, UserInputError, error_chain

# jsonargparse's exceptions hold their key, class path and value only in their text, so these phrases are
# read from it, here only. tests/cli/test_argument_parser.py checks them against messages recorded from the
# installed jsonargparse (tests/cli/jsonargparse_messages.json): an upgrade that rewords one fails there.
WORDING = {
    # A level of keys; argparse.ArgumentError's text starts so too.
    "key": re.compile(r'^Parser key "(?P<key>[^"]+)"'),
    # A class tried for a value.
    "class_path": re.compile(r"^Problem with given class_path '(?P<class_path>[^']+)'"),
    # The key of an unknown-key KeyError: "Option 'x' is not accepted", "… does not accept option 'a.x'".
    "option": re.compile(r"[Oo]ption '(?P<key>[^']+)'"),
    "missing_subcommand": re.compile(r'^expected "subcommand" to be one of'),
    "not_a_subclass": re.compile(
        r"^Import path (?P<value>\S+) does not correspond to a subclass of (?P<base>\w+)"
    ),
    "import_path": re.compile(r"^Expected a dot import path string: (?P<value>\S+)"),
    "required": re.compile(r"^the following arguments are required: (?P<names>.*)$", re.MULTILINE),
    "given": re.compile(r"(?:Given|Got) value: (?P<value>.*)$", re.MULTILINE),
    "expected": re.compile(r"Expected an? (?P<type>.+?)(?:\. Got value: .*)?$", re.MULTILINE),
    "literal": re.compile(r"^typing\.Literal\[(?P<choices>.*)\]$"),
    "class": re.compile(r"<class '(?P<path>(?:[\w.]+\.)?(?P<name>\w+))'>"),
    # argparse's words, which jsonargparse reuses.
    "unrecognized": re.compile(r"^unrecognized arguments: (?P<rest>.+)$"),
    "invalid_choice": re.compile(r"invalid choice: '(?P<value>[^']*)'"),
}

SUBCOMMANDS = tuple(LightningCLI.subcommands())
# Keys whose value is one class given by class_path/init_args; other keys holding classes (trainer.callbacks,
# trainer.logger) hold lists of them, where "init_args" is not part of the key a user types.
SINGLE_CLASS_KEYS = ("model", "data")
CLASS_EXAMPLES = {
    "model": "neobert_tasks.tasks.SequenceClassificationTask",
    "data": "neobert_tasks.data.GLUEDataModule",
}
# Subclasses listed by name in a message; past this many, the first ones stand for the rest.
MAX_LISTED_CLASSES = 8


@dataclass(frozen=True)
class Failure:
    """What jsonargparse reported, read from its chain of exceptions."""

    message: str  # the text jsonargparse gave to `ArgumentParser.error`
    chain: tuple[BaseException, ...]  # the exception and its causes, outermost first
    key: str | None = None  # the outermost key: "model", "trainer.max_epochs"
    class_path: str | None = None  # the class tried for that key's value
    class_cause: BaseException | None = None  # why that class was refused
    inner_key: str | None = None  # the init argument of that class whose value was refused
    inner_text: str = ""  # the refusal of that init argument's value

    @property
    def cause(self) -> BaseException | None:
        """The innermost exception: what went wrong."""
        return self.chain[-1] if self.chain else None

    def find(self, kind: type) -> BaseException | None:
        """The outermost exception of the chain that is a `kind`."""
        return next((error for error in self.chain if isinstance(error, kind)), None)


def text_of(error: BaseException | None) -> str:
    """An exception's message (a KeyError's without the quotes ``str`` adds)."""
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    return "" if error is None else str(error)


def read_failure(message: str, error: BaseException | None) -> Failure:
    """The key, class path and causes that `error`'s chain names."""
    chain = list(error_chain(error))
    found: dict = {}
    for position, link in enumerate(chain):
        text = text_of(link)
        class_path, key = WORDING["class_path"].match(text), WORDING["key"].match(text)
        if class_path and "class_path" not in found:
            following = chain[position + 1] if position + 1 < len(chain) else None
            found.update(class_path=class_path["class_path"], class_cause=following)
        elif key and "key" not in found:
            found["key"] = key["key"]
        elif key and "class_path" in found and "inner_key" not in found:
            found.update(inner_key=key["key"], inner_text=text)
    if "key" not in found and (key := WORDING["key"].match(message)):
        found["key"] = key["key"]
    return Failure(message, tuple(chain), **found)


def explain(
    message: str, error: BaseException | None, parser: ArgumentParser, arguments: Sequence[str]
) -> UserInputError:
    """The one-sentence error for what jsonargparse reported, given the parser and the command line."""
    failure = read_failure(message, error)
    sentences = (explainer(failure, parser, list(arguments)) for explainer in EXPLAINERS)
    fallback = ConfigError(f"Invalid configuration: {one_line(message)}")
    return next((sentence for sentence in sentences if sentence is not None), fallback)


# ----------------------------------------------------------------------------------------------------------
# Sentences.


def one_line(text: str) -> str:
    """`text` with its lines joined and runs of whitespace collapsed."""
    return " ".join(text.split())


def with_period(sentence: str) -> str:
    return sentence if sentence.endswith((".", "?")) else sentence + "."


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


def class_path_key(key: str | None) -> str:
    """The key that names the class of `key`: ``model.class_path``, or the list key itself."""
    return f"{key}.class_path" if key in SINGLE_CLASS_KEYS else str(key)


def init_argument(failure: Failure, name: str, arguments: list[str]) -> tuple[str, str]:
    """How to name init argument `name` of the failure's class, and where it is set."""
    key = f"{failure.key}.init_args.{name}"
    class_name = str(failure.class_path).rpartition(".")[2]
    named = f"'{key}'" if failure.key in SINGLE_CLASS_KEYS else f"'{name}' of {class_name} in '{failure.key}'"
    return named, where(key, arguments)


def type_name(text: str) -> str:
    """A type as jsonargparse names it, readable: ``<class 'int'>`` is int, ``<class 'NoneType'>`` None."""
    text = WORDING["class"].sub(lambda match: match["name"], text.strip())
    return "None" if text == "NoneType" else text


def value_and_expectation(text: str) -> tuple[str | None, str]:
    """The value jsonargparse was given and what it expected, from its refusal of a value."""
    given = WORDING["given"].search(text)
    expected = [match["type"] for match in WORDING["expected"].finditer(text)]
    # Several Literal types (trainer.precision has three) read as one list of choices.
    choices = [match["choices"] for name in expected if (match := WORDING["literal"].match(name))]
    names = [type_name(name) for name in expected if not WORDING["literal"].match(name)]
    names = list(dict.fromkeys(([f"one of {', '.join(choices)}"] if choices else []) + names))
    if names:
        expectation = "expected " + " or ".join(names)
    else:  # another kind of refusal: its first line after the key
        lines = [line for line in text.splitlines()[1:] if line.strip()]
        expectation = one_line(lines[0]).lstrip("- ") if lines else "not accepted"
    return (given["value"].strip() if given else None), expectation


def wrong_value(key_text: str, location: str, text: str) -> ConfigError:
    value, expectation = value_and_expectation(text)
    value_text = f"Invalid value {value!r}" if value is not None else "Invalid value"
    if value and "expected list" in expectation and not value.lstrip().startswith("["):
        expectation += f"; a list is written in brackets, '[{value}]'"  # `--export.formats onnx`
    return ConfigError(with_period(f"{value_text} for {key_text}{location}: {expectation}"))


# ----------------------------------------------------------------------------------------------------------
# Explainers: each recognises one kind of mistake and returns its sentence, or None.


def own_error(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    """A `UserInputError` raised inside jsonargparse (a config file's check, a class's own check)."""
    return failure.find(UserInputError)


def yaml_value(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    error = failure.find(yaml.YAMLError)
    if error is None:
        return None
    if failure.key and failure.key != "config":
        location = where(failure.key, arguments)
        return ConfigError(
            f"Invalid value for '{failure.key}'{location}: not valid YAML ({yaml_problem(error)})."
        )
    return ConfigError(f"A --config value is not valid YAML: {yaml_problem(error)}.")


def unknown_subcommand(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    error = failure.find(ArgumentError)
    if error is None or error.argument_name != "subcommand":
        return None
    found = WORDING["invalid_choice"].search(str(error))
    value = found["value"] if found else next((arg for arg in arguments if not arg.startswith("-")), "")
    return ConfigError(with_period(f"Unknown subcommand '{value}'{suggestion(value, SUBCOMMANDS)}"))


def missing_subcommand(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    found = WORDING["missing_subcommand"].match(text_of(failure.cause))
    if not (isinstance(failure.cause, KeyError) and found):
        return None
    example = "python -m neobert_tasks fit --config <file>"
    return ConfigError(f"Give a subcommand first ({', '.join(SUBCOMMANDS)}), e.g. {example}.")


def unknown_key(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    found = WORDING["option"].search(text_of(failure.cause)) if isinstance(failure.cause, KeyError) else None
    if not found:
        return None
    name = found["key"]
    if failure.class_path is not None:
        key_text, location = init_argument(failure, name, arguments)
        prefix = f"{failure.key}.init_args." if failure.key in SINGLE_CLASS_KEYS else ""
        hint = suggestion(name, class_argument_names(failure.class_path), prefix)
        return ConfigError(with_period(f"Unknown key {key_text}{location}{hint}"))
    # A key unknown to a subcommand's parser: jsonargparse attaches that parser to the error.
    options = option_names(getattr(failure.cause, "subcommand_parser", None) or parser)
    return ConfigError(
        with_period(f"Unknown key '{name}'{where(name, arguments)}{suggestion(name, options)}")
    )


def unrecognized_argument(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    found = WORDING["unrecognized"].match(failure.message) if not failure.chain else None
    if not found:
        return None
    first = found["rest"].split()[0]
    if not first.startswith("-"):
        return ConfigError(
            f"Unexpected argument '{first}' on the command line; options start with '--'"
            " (e.g. --trainer.max_epochs 3) and the subcommand (fit, validate, test, predict) comes first."
        )
    key = first.lstrip("-").split("=", 1)[0]
    return ConfigError(
        with_period(f"Unknown key '{key}' on the command line{suggestion(key, option_names(parser))}")
    )


def not_a_subclass(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    """A class path that imports but names something else than the key takes (``builtins.print`` for
    ``model``)."""
    found = WORDING["not_a_subclass"].match(text_of(failure.cause))
    if not isinstance(failure.cause, ValueError) or not found:
        return None
    base = found["base"]
    paths = (match["path"] for match in WORDING["class"].finditer(failure.message) if match["name"] == base)
    base_path = next(paths, None)
    choices = subclass_paths(base_path) if base_path else []
    listed = ", ".join(choices[:MAX_LISTED_CLASSES]) + (", …" if len(choices) > MAX_LISTED_CLASSES else "")
    options = f"one of {listed} or a subclass of {base}" if choices else f"a {base}"
    key = class_path_key(failure.key)
    return ConfigError(
        f"{key} must name a subclass of {base}{lightning_kind(base_path)}, not {found['value']!r}"
        f"{where(key, arguments)}; give {options}."
    )


def not_an_import_path(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    found = WORDING["import_path"].match(text_of(failure.cause))
    if not isinstance(failure.cause, ValueError) or not found:
        return None
    example = CLASS_EXAMPLES.get(str(failure.key), "lightning.pytorch.callbacks.EarlyStopping")
    location = where(class_path_key(failure.key), arguments)
    return ConfigError(
        f"Unknown class '{found['value']}' for '{failure.key}'{location};"
        f" give its import path (package.module.ClassName, e.g. {example})."
    )


def class_problem(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    """A value given to a class (model, data, a callback) that the class refused: a wrong value of an init
    argument, a required one missing, or a class path that cannot be imported."""
    if failure.class_path is None:
        return None
    if failure.inner_key is not None:
        return wrong_value(*init_argument(failure, failure.inner_key, arguments), failure.inner_text)
    module_name, _, class_name = failure.class_path.rpartition(".")
    reason = text_of(failure.class_cause)
    required = WORDING["required"].search(reason)
    if required:
        key_text, location = init_argument(failure, required["names"].split(",")[0].strip(), arguments)
        return ConfigError(f"{key_text} is required by {class_name} but not set{location}.")
    # A module that exists but lacks the class: suggest the names it has.
    names = module_class_names(module_name)
    return ConfigError(
        f"Cannot use class_path '{failure.class_path}' for '{failure.key}'"
        f"{where(class_path_key(failure.key), arguments)}: {one_line(reason).rstrip('.')}"
        f"{'.' if names is None else suggestion(class_name, names, f'{module_name}.')}"
    )


def required_keys(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    found = WORDING["required"].match(text_of(failure.cause))
    if not found:
        return None
    # A subcommand's keys are named from the subcommand: fit.model.
    first = found["names"].split(",")[0].strip()
    key = first.split(".", 1)[1] if first.split(".", 1)[0] in SUBCOMMANDS else first
    return ConfigError(f"'{key}' is required but not set; give it in a config file or as --{key}.")


def wrong_top_level_value(failure: Failure, parser, arguments: list[str]) -> UserInputError | None:
    if failure.key is None:
        return None
    return wrong_value(f"'{failure.key}'", where(failure.key, arguments), failure.message)


EXPLAINERS = [
    own_error,
    yaml_value,
    unknown_subcommand,
    missing_subcommand,
    unknown_key,
    unrecognized_argument,
    not_a_subclass,
    not_an_import_path,
    class_problem,
    required_keys,
    wrong_top_level_value,
]
