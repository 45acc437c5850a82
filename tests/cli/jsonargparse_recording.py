"""Mistakes made on a small parser shaped like the CLI's, and jsonargparse's report of each, recorded.

`build_parser` builds a `NeoBERTArgumentParser` with the CLI's four subcommands, each with ``--config``, the
real Lightning ``trainer`` options and a ``model`` chosen by class_path among the small tasks below. `CASES`
are mistakes made on it with the sentence each must produce; `report` runs one and returns what jsonargparse
passed to ``ArgumentParser.error`` (its message and chain of exceptions) as plain data.
``jsonargparse_messages.json`` holds those reports as the installed jsonargparse wrote them; after a
deliberate upgrade, check that `neobert_tasks.parse_errors.WORDING` still reads them, then record again with
``python -m tests.cli.jsonargparse_recording``.
"""

from __future__ import annotations

import importlib
import json
from argparse import ArgumentError
from pathlib import Path
from typing import Literal

import jsonargparse
import lightning as L
from jsonargparse import ActionConfigFile
from lightning.pytorch.cli import LightningCLI

from neobert_tasks.argument_parser import NeoBERTArgumentParser
from neobert_tasks.errors import UserInputError

RECORDING = Path(__file__).with_name("jsonargparse_messages.json")
TMP = "{tmp}"  # stands for the test's temporary folder in arguments and recorded text


class TinyTask(L.LightningModule):
    """A task with an init argument of each kind the CLI's tasks have."""

    def __init__(
        self,
        learning_rate: float = 1e-3,
        mode: Literal["fast", "exact"] = "fast",
        warmup_steps: int | None = None,
    ):
        super().__init__()


class TinyClassificationTask(TinyTask):
    def __init__(self, num_labels: int = 2, **kwargs):
        super().__init__(**kwargs)


class RecordingParser(NeoBERTArgumentParser):
    """Keeps what jsonargparse passes to `error` before it is explained."""

    reports: list[tuple[RecordingParser, str, BaseException | None]] = []

    def error(self, message, ex=None):
        if self.exit_on_error:
            RecordingParser.reports.append((self, message, ex))
        super().error(message, ex)


def build_parser() -> tuple[RecordingParser, dict[str, RecordingParser]]:
    """The parser and its subcommand parsers, by name."""
    parser = RecordingParser(parser_mode="omegaconf")
    subcommands = parser.add_subcommands()
    parsers = {}
    for name in LightningCLI.subcommands():
        subparser = RecordingParser(parser_mode="omegaconf")
        subparser.add_argument("-c", "--config", action=ActionConfigFile)
        subparser.add_lightning_class_args(L.Trainer, "trainer")
        subparser.add_lightning_class_args(TinyTask, "model", subclass_mode=True)
        subcommands.add_subcommand(name, subparser)
        parsers[name] = subparser
    return parser, parsers


# The import path of this module, also when it runs as __main__ to record.
MODULE = "tests.cli.jsonargparse_recording"
TASK = f"{MODULE}.TinyTask"
MODEL = ["--model", TASK]
EARLY_STOPPING = "lightning.pytorch.callbacks.EarlyStopping"

# name: (arguments, config files to write under {tmp}, the sentence expected).
CASES: dict[str, tuple[list[str], dict[str, str], str]] = {
    "unknown_key_on_the_command_line": (
        ["fit", *MODEL, "--trainer.max_epoch", "3"],
        {},
        "Unknown key 'trainer.max_epoch' on the command line; did you mean 'trainer.max_epochs'?",
    ),
    "unknown_key_in_a_config_file": (
        ["fit", *MODEL, "--config", f"{TMP}/mine.yaml"],
        {"mine.yaml": "trainer:\n  max_epoch: 3\n"},
        f"Unknown key 'trainer.max_epoch' in config file '{TMP}/mine.yaml'; did you mean"
        " 'trainer.max_epochs'?",
    ),
    "unknown_init_argument": (
        ["fit", *MODEL, "--model.init_args.learning_rat", "1e-3"],
        {},
        "Unknown key 'model.init_args.learning_rat' on the command line; did you mean"
        " 'model.init_args.learning_rate'?",
    ),
    "unknown_init_argument_in_a_config_file": (
        ["fit", "--config", f"{TMP}/mine.yaml"],
        {"mine.yaml": f"model:\n  class_path: {TASK}\n  init_args:\n    mod: fast\n"},
        f"Unknown key 'model.init_args.mod' in config file '{TMP}/mine.yaml'; did you mean"
        " 'model.init_args.mode'?",
    ),
    "value_of_the_wrong_type": (
        ["fit", *MODEL, "--trainer.max_epochs", "abc"],
        {},
        "Invalid value 'abc' for 'trainer.max_epochs' on the command line: expected int or None.",
    ),
    "value_outside_the_literals": (
        ["fit", *MODEL, "--trainer.precision", "17"],
        {},
        "Invalid value '17' for 'trainer.precision' on the command line: expected one of 64, 32, 16,"
        " 'transformer-engine', 'transformer-engine-float16', '16-true', '16-mixed', 'bf16-true',"
        " 'bf16-mixed', '32-true', '64-true', '64', '32', '16', 'bf16' or None.",
    ),
    "init_argument_of_the_wrong_type": (
        ["fit", *MODEL, "--model.init_args.learning_rate", "fast"],
        {},
        "Invalid value 'fast' for 'model.init_args.learning_rate' on the command line: expected float.",
    ),
    "init_argument_outside_its_literal": (
        ["fit", *MODEL, "--model.init_args.mode", "slow"],
        {},
        "Invalid value 'slow' for 'model.init_args.mode' on the command line: expected one of 'fast',"
        " 'exact'.",
    ),
    "init_argument_of_an_optional_type": (
        ["fit", *MODEL, "--model.init_args.warmup_steps", "many"],
        {},
        "Invalid value 'many' for 'model.init_args.warmup_steps' on the command line: expected int or None.",
    ),
    "class_path_of_something_else": (
        ["fit", "--model", "builtins.print"],
        {},
        "model.class_path must name a subclass of TinyTask (a LightningModule), not 'builtins.print' on the"
        " command line; give a TinyTask.",
    ),
    "class_path_that_is_not_an_import_path": (
        ["fit", "--model", "nosuch"],
        {},
        "Unknown class 'nosuch' for 'model' on the command line; give its import path"
        " (package.module.ClassName, e.g. neobert_tasks.tasks.SequenceClassificationTask).",
    ),
    "class_path_missing_from_its_module": (
        ["fit", "--model", f"{MODULE}.TinyTsk"],
        {},
        f"Cannot use class_path '{MODULE}.TinyTsk' for 'model' on the command line: module '{MODULE}' has"
        f" no attribute 'TinyTsk'; did you mean '{MODULE}.TinyTask'?",
    ),
    "callback_init_argument_of_the_wrong_type": (
        ["fit", *MODEL, f"--trainer.callbacks+={EARLY_STOPPING}", "--trainer.callbacks.patience=x"],
        {},
        "Invalid value 'x' for 'patience' of EarlyStopping in 'trainer.callbacks' on the command line:"
        " expected int.",
    ),
    "callback_without_its_required_argument": (
        ["fit", *MODEL, "--config", f"{TMP}/mine.yaml"],
        {"mine.yaml": f"trainer:\n  callbacks:\n    - class_path: {EARLY_STOPPING}\n"},
        "'monitor' of EarlyStopping in 'trainer.callbacks' is required by EarlyStopping but not set.",
    ),
    "required_key_not_set": (
        ["fit"],
        {},
        "'model' is required but not set; give it in a config file or as --model.",
    ),
    "unknown_subcommand": (["fitt"], {}, "Unknown subcommand 'fitt'; did you mean 'fit'?"),
    "missing_subcommand": (
        [],
        {},
        "Give a subcommand first (fit, validate, test, predict), e.g. python -m neobert_tasks fit"
        " --config <file>.",
    ),
    "argument_that_is_not_an_option": (
        ["fit", *MODEL, "stray"],
        {},
        "Unexpected argument 'stray' on the command line; options start with '--' (e.g."
        " --trainer.max_epochs 3) and the subcommand (fit, validate, test, predict) comes first.",
    ),
}


def arguments_of(name: str, tmp: Path) -> list[str]:
    """A case's arguments, its config files written under `tmp`."""
    arguments, files, _ = CASES[name]
    for file_name, text in files.items():
        (tmp / file_name).write_text(text)
    return [argument.replace(TMP, str(tmp)) for argument in arguments]


def qualified_name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def report(name: str, tmp: Path, parser: RecordingParser, parsers: dict[str, RecordingParser]) -> dict:
    """Run case `name`: what jsonargparse reported and the sentence raised, with `tmp` written {tmp}."""
    RecordingParser.reports.clear()
    try:
        parser.parse_args(arguments_of(name, tmp))
    except UserInputError as error:
        sentence = str(error)
    else:
        raise AssertionError(f"case {name} parsed without an error")
    reporter, message, error = RecordingParser.reports[-1]
    names = {id(subparser): subcommand for subcommand, subparser in parsers.items()}
    chain = []
    while error is not None:
        link = {"type": qualified_name(type(error))}
        link["text"] = error.message if isinstance(error, ArgumentError) else explained_text(error)
        if isinstance(error, ArgumentError) and error.argument_name is not None:
            link["argument_name"] = error.argument_name
        if getattr(error, "subcommand_parser", None) is not None:
            link["subcommand_parser"] = names[id(error.subcommand_parser)]
        chain.append(link)
        error = error.__cause__
    recorded = {"parser": names.get(id(reporter), ""), "message": message, "chain": chain}
    return json.loads(json.dumps(recorded).replace(str(tmp), TMP)), sentence.replace(str(tmp), TMP)


def explained_text(error: BaseException) -> str:
    return str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)


def rebuild(recorded: dict, tmp: Path, parsers: dict[str, RecordingParser]) -> BaseException | None:
    """The chain of exceptions of a recorded report, outermost first, as jsonargparse raised it."""
    error = None
    for link in reversed(recorded["chain"]):
        module_name, _, qualname = link["type"].rpartition(".")
        kind = importlib.import_module(module_name)
        for part in qualname.split("."):
            kind = getattr(kind, part)
        text = link["text"].replace(TMP, str(tmp))
        made = kind(None, text) if issubclass(kind, ArgumentError) else kind(text)
        if "argument_name" in link:
            made.argument_name = link["argument_name"]
        if "subcommand_parser" in link:
            made.subcommand_parser = parsers[link["subcommand_parser"]]
        made.__cause__ = error
        error = made
    return error


def record(tmp: Path) -> None:
    """Write every case's report into `RECORDING`."""
    parser, parsers = build_parser()
    reports = {name: report(name, tmp, parser, parsers)[0] for name in CASES}
    recording = {"jsonargparse": jsonargparse.__version__, "reports": reports}
    RECORDING.write_text(json.dumps(recording, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    import tempfile

    # Recorded from the module as the tests import it: class paths name it, not __main__.
    recording = importlib.import_module(MODULE)
    with tempfile.TemporaryDirectory() as folder:
        recording.record(Path(folder))
