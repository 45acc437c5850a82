"""``python -m neobert_tasks.suite glue|table …``: run the GLUE suite, or rebuild its table.

``glue`` runs every task × seed (× grid point) through the neobert_tasks command line, each in its own
folder under ``--output_dir``, skips finished runs, and prints and saves the table; ``table`` only
rebuilds the table from the runs already in ``--output_dir``. Arguments after ``--`` go unchanged to
every run. A mistake (unknown task, missing file or data) ends with one sentence and exit status 2; a
suite in which some runs failed exits with status 1 after saving the table of the others.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from neobert_tasks.errors import MissingPathError, UserInputError
from neobert_tasks.suite.grid import DEFAULT_POINT, load_grid
from neobert_tasks.suite.plan import (
    DEFAULT_TASK_CONFIG_DIR,
    SuiteOptions,
    check_paths,
    drop_tasks_without_data,
    missing_data,
    missing_data_message,
    parse_overrides,
    resolve_tasks,
)
from neobert_tasks.suite.results import collect_runs, summarize
from neobert_tasks.suite.runner import LAUNCHERS, SuiteStopped, run_suite
from neobert_tasks.suite.tables import markdown_table, write_tables

DEFAULT_OUTPUT_DIR = "runs/suite/glue"


def boolean(text: str) -> bool:
    """``true``/``false`` (also yes/no, 1/0) as a bool, for options written ``--mnli_init false``."""
    lowered = text.lower()
    if lowered in ("true", "yes", "1"):
        return True
    if lowered in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def build_parser() -> argparse.ArgumentParser:
    """The suite's parser with its ``glue`` and ``table`` commands."""
    parser = argparse.ArgumentParser(prog="python -m neobert_tasks.suite", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    glue = commands.add_parser("glue", help="Run the GLUE suite (arguments after -- go to every run).")
    glue.add_argument("--tasks", nargs="+", default=["all"], help="GLUE tasks to run, or all (the nine).")
    glue.add_argument("--seeds", nargs="+", type=int, default=[0], help="Each task runs once per seed.")
    glue.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR, help="Folder of all runs and of the table.")
    glue.add_argument(
        "--config", action="append", default=[], help="Extra config (preset) for every run; repeatable."
    )
    glue.add_argument(
        "--override", action="append", default=[], help="key=value setting for every run; repeatable."
    )
    glue.add_argument(
        "--grid", help="YAML grid of values to try; configs/suite/glue_grid.yaml is the paper's."
    )
    glue.add_argument(
        "--mnli_init",
        type=boolean,
        default=True,
        help="Start RTE, STS-B, MRPC, QNLI from the best MNLI run (default: true; it adds the MNLI run).",
    )
    glue.add_argument("--data_dir", help="GLUE folder with one <task>/ per task; default: the hub dataset.")
    glue.add_argument(
        "--missing_data",
        choices=("error", "skip"),
        default="error",
        help="Stop or skip on tasks without data.",
    )
    glue.add_argument(
        "--launcher", choices=LAUNCHERS, default="subprocess", help="One process per run, or all in this one."
    )
    glue.add_argument(
        "--task_config_dir", type=Path, default=DEFAULT_TASK_CONFIG_DIR, help="Folder of <task>.yaml."
    )
    glue.add_argument("--dry_run", action="store_true", help="Print each run's command line and stop.")
    table = commands.add_parser("table", help="Print and save the table of the runs in --output_dir.")
    table.add_argument("--output_dir", default=DEFAULT_OUTPUT_DIR, help="Folder the suite wrote its runs to.")
    return parser


def suite_options(arguments: argparse.Namespace, passthrough: list[str]) -> SuiteOptions:
    """`SuiteOptions` from the ``glue`` command's arguments, checked before anything runs."""
    grid = load_grid(arguments.grid) if arguments.grid else [DEFAULT_POINT]
    options = SuiteOptions(
        tasks=resolve_tasks(arguments.tasks, arguments.mnli_init),
        seeds=list(dict.fromkeys(arguments.seeds)),
        output_dir=Path(arguments.output_dir),
        configs=[Path(config) for config in arguments.config],
        overrides=parse_overrides(arguments.override, grid),
        passthrough=passthrough,
        grid=grid,
        mnli_init=arguments.mnli_init,
        data_dir=Path(arguments.data_dir) if arguments.data_dir else None,
        task_config_dir=arguments.task_config_dir,
    )
    check_paths(options)
    problems = missing_data(options.tasks, options.data_dir) if options.data_dir else {}
    if problems and arguments.missing_data == "error":
        raise UserInputError(missing_data_message(problems))
    if problems:
        print(f"Skipping tasks without data: {'; '.join(problems.values())}.")
        options.tasks = drop_tasks_without_data(options.tasks, problems, options.mnli_init)
        if not options.tasks:
            raise UserInputError("No task of --tasks has data in --data_dir; nothing to run.")
    return options


def run_command(argv: list[str]) -> int:
    """Parse ``argv`` and run its command; the exit status (0, or 1 when some runs failed)."""
    # Everything after the first "--" belongs to the runs, not to the suite.
    passthrough = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    arguments = build_parser().parse_args(own)
    if arguments.command == "table":
        if passthrough:
            raise UserInputError("The table command takes no arguments after --.")
        if not Path(arguments.output_dir).is_dir():
            raise MissingPathError(f"--output_dir: the folder '{arguments.output_dir}' does not exist.")
        runs = collect_runs(arguments.output_dir)
        rows = summarize(runs)
        print(markdown_table(rows))
        paths = write_tables(arguments.output_dir, rows, runs)
        print(f"Table of {len(runs)} runs saved to {', '.join(str(path) for path in paths)}")
        return 0
    options = suite_options(arguments, passthrough)
    outcome = run_suite(options, launcher=arguments.launcher, dry_run=arguments.dry_run)
    return 1 if outcome.failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m neobert_tasks.suite``; ``argv`` for use from Python (tests, notebooks).

    Returns the exit status: 0, 1 when some runs failed, 2 after printing a user's mistake, and that of
    the signal (130, 143) when a run was stopped by Ctrl-C or SIGTERM.
    """
    try:
        return run_command(list(sys.argv[1:] if argv is None else argv))
    except UserInputError as error:
        print(f"neobert_tasks.suite: error: {error}", file=sys.stderr)
        return 2
    except SuiteStopped as stop:
        print(f"neobert_tasks.suite: {stop}", file=sys.stderr)
        return stop.status
    except KeyboardInterrupt:
        # Ctrl-C while a subprocess runs reaches this process too; a traceback would only hide the advice.
        print("neobert_tasks.suite: interrupted; run the same command again to resume.", file=sys.stderr)
        return 130
