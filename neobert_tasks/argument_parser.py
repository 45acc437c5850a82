"""The command line's argument parser, whose errors are one sentence naming the key, the value and where.

jsonargparse reports a mistake by printing the usage and a nested, multi-line account of every type it
tried for the value. `NeoBERTArgumentParser` instead raises a `ConfigError` (a `MissingPathError` for a
config file that does not exist) naming the key, the value, the config file or command line that holds it
and, for an unknown key, the closest valid name; `cli.main` prints it and exits with status 2.

Before jsonargparse reads the command line, the config files it names are checked
(`neobert_tasks.command_line`); jsonargparse's own errors are explained by `neobert_tasks.parse_errors`.
Parsers nested inside jsonargparse (one per class of a union, tried in turn) keep raising their own errors,
which jsonargparse catches.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from neobert_tasks.command_line import NEGATIVE_NUMBER, check_config_files, join_negative_values
from neobert_tasks.parse_errors import explain

__all__ = ["NEGATIVE_NUMBER", "NeoBERTArgumentParser"]


class NeoBERTArgumentParser(LightningArgumentParser):
    """`LightningArgumentParser` without abbreviated options, whose errors are one-sentence `ConfigError`s."""

    command_line: list[str] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # argparse would take `--trainer.max_epoch` for max_epochs on the command line while the same key is
        # an error in a YAML file, and an option added later can make a working abbreviation ambiguous.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def parse_args(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        """jsonargparse's ``parse_args``, after joining negative values to their options and checking the
        config files (both in `neobert_tasks.command_line`). A subcommand's parser is called with the
        arguments after the subcommand."""
        arguments = join_negative_values(sys.argv[1:] if args is None else list(args))
        self.command_line = [str(argument) for argument in arguments]
        if not {"-h", "--help"} & set(self.command_line):
            check_config_files(self.command_line)
        return super().parse_args(arguments, *rest, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)  # a nested parser: jsonargparse catches this and tries the next type
        raise explain(message, ex, self, self.command_line) from None
