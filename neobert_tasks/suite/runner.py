"""Running a planned GLUE suite: finished runs are skipped, the others started, MNLI starts resolved.

A run is finished when its folder holds ``metrics.json``, which the export callback writes last, after
the exported model; a folder without it is what a killed run left: the run continues from its
``checkpoints/last.ckpt`` when there is one, and otherwise the folder is cleared and the run starts
again, so a suite that was stopped resumes where it stopped. A finished run is never re-run, even when
options changed since: use a new output folder for a new experiment.

Each run is by default its own ``python -m neobert_tasks fit`` process: a fresh interpreter returns all
host and GPU memory when a run ends, no Lightning or CUDA state leaks into the next run, and a run that
crashes hard (segfault, out-of-memory kill) fails alone while the suite goes on. ``in_process`` calls
`neobert_tasks.cli.main` instead, which saves each run the seconds spent importing torch and Lightning
(tests, tiny runs); an exception there still fails only its run, but a hard crash ends the suite.
"""

from __future__ import annotations

import contextlib
import gc
import json
import shlex
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from neobert_tasks.errors import UserInputError
from neobert_tasks.suite.plan import MNLI_INIT_TASKS, PlannedRun, SuiteOptions, plan_runs, run_arguments
from neobert_tasks.suite.results import collect_runs, select_point, summarize
from neobert_tasks.suite.tables import markdown_table, write_tables

FINISHED_FILE = "metrics.json"
# The command line a run was started with, written into its folder (compared when it is skipped).
COMMAND_FILE = "suite_command.json"
LAUNCHERS = ("subprocess", "in_process")
# The exit status of neobert_tasks for a user's mistake: the same mistake would stop every other run.
USER_ERROR_STATUS = 2
# A run stopped by Ctrl-C or SIGTERM (a job pre-empted: 128 + signal, or minus the signal for a killed
# subprocess) means the suite is being stopped too, not that the next run should start.
STOP_STATUSES = {130, 143, -2, -15}
# How long a run stopped by Ctrl-C may take to finish its step and save last.ckpt.
CTRL_C_GRACE_SECONDS = 120


class SuiteStopped(Exception):
    """A run was stopped by a signal; the suite stops with its exit status (run it again to resume)."""

    def __init__(self, label: str, status: int):
        super().__init__(f"The {label} run was stopped by a signal; run the same command again to resume.")
        self.status = status if status > 0 else 128 - status


@dataclass
class SuiteOutcome:
    """What became of each planned run, and the table built afterwards."""

    trained: list[PlannedRun] = field(default_factory=list)
    skipped: list[PlannedRun] = field(default_factory=list)
    failed: list[tuple[PlannedRun, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)


def launch_subprocess(arguments: list[str]) -> int:
    """Run ``python -m neobert_tasks <arguments>`` in a new interpreter; its exit status."""
    process = subprocess.Popen([sys.executable, "-m", "neobert_tasks", *arguments])
    try:
        return process.wait()
    except KeyboardInterrupt:
        # The terminal's Ctrl-C reached the run too, which saves last.ckpt after its running step before it
        # exits (neobert_tasks.interrupt); `subprocess.run` would kill it a quarter of a second later. A
        # second Ctrl-C, or a run that takes too long, ends it at once.
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            process.wait(timeout=CTRL_C_GRACE_SECONDS)
        if process.poll() is None:
            process.kill()
            process.wait()
        raise


def launch_in_process(arguments: list[str]) -> int:
    """Run `neobert_tasks.cli.main` with ``arguments`` in this interpreter; the exit status it would have."""
    from neobert_tasks.cli import main

    saved_argv = sys.argv
    # LightningCLI warns when both ``args`` and a foreign command line (the suite's own) are present.
    sys.argv = ["neobert_tasks"]
    try:
        main(args=arguments)
    except SystemExit as exit_info:  # sys.exit(None) is a success, sys.exit("message") a failure
        return exit_info.code if isinstance(exit_info.code, int) else int(exit_info.code is not None)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved_argv
        gc.collect()  # the run's model and data go now, not at some later collection
    return 0


def best_mnli_export(output_dir: Path, seed: int) -> Path | None:
    """The export of seed ``seed``'s run at the best MNLI grid point (best mean over seeds), if finished."""
    runs = [run for run in collect_runs(output_dir) if run["task"] == "mnli"]
    if not runs:
        return None
    exports = (Path(run["run_dir"]) / "export" for run in select_point(runs)[1] if run["seed"] == seed)
    return next((export for export in exports if export.is_dir()), None)


def run_suite(options: SuiteOptions, launcher: str = "subprocess", dry_run: bool = False) -> SuiteOutcome:
    """Start every planned run that has not finished, then print and save the table.

    ``dry_run`` prints each run's command line instead. A run that ends with a user error (exit status
    2) stops the suite with `UserInputError`, since the same mistake would stop every other run.
    """
    launch = launch_in_process if launcher == "in_process" else launch_subprocess
    runs = plan_runs(options)
    print(
        f"GLUE suite: {len(runs)} runs ({', '.join(options.tasks)} × seeds "
        f"{', '.join(map(str, options.seeds))} × {len(options.grid)} grid point(s)) in {options.output_dir}"
    )
    outcome = SuiteOutcome()
    for position, run in enumerate(runs, start=1):
        prefix = f"[{position}/{len(runs)}] {run.label}"
        if dry_run:
            _print_command(run, options, prefix)
        elif (run.run_dir / FINISHED_FILE).is_file():
            print(f"{prefix}: skipped, finished before ({run.run_dir / FINISHED_FILE} exists)")
            _warn_if_trained_otherwise(run, options, prefix)
            outcome.skipped.append(run)
        else:
            reason = _train(run, options, launch, prefix)
            if reason is None:
                outcome.trained.append(run)
            else:
                outcome.failed.append((run, reason))
    if dry_run:
        return outcome
    runs_found = collect_runs(options.output_dir)
    outcome.rows = summarize(runs_found)
    paths = write_tables(options.output_dir, outcome.rows, runs_found)
    print("\n" + markdown_table(outcome.rows))
    print(f"Table saved to {', '.join(str(path) for path in paths)}")
    trained, skipped, failed = len(outcome.trained), len(outcome.skipped), len(outcome.failed)
    print(f"{trained} runs trained, {skipped} skipped, {failed} failed.")
    for run, reason in outcome.failed:
        print(f"  failed: {run.label} ({reason})")
    return outcome


def _train(
    run: PlannedRun, options: SuiteOptions, launch: Callable[[list[str]], int], prefix: str
) -> str | None:
    """Start (or resume) one unfinished run; why it did not finish, None when it did."""
    from_mnli = options.mnli_init and run.task in MNLI_INIT_TASKS
    pretrained = best_mnli_export(options.output_dir, run.seed) if from_mnli else None
    if from_mnli and pretrained is None:
        print(f"{prefix}: not started, no finished MNLI run of seed {run.seed} to start from")
        return f"no finished MNLI run of seed {run.seed}"
    arguments = run_arguments(run, options, pretrained)
    if _resumed(run, arguments, launch, prefix):
        return None
    if run.run_dir.exists():
        print(f"{prefix}: clearing {run.run_dir}, left unfinished by an earlier invocation")
        shutil.rmtree(run.run_dir)
    print(f"{prefix}: training in {run.run_dir}" + (f", starting from {pretrained}" if pretrained else ""))
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / COMMAND_FILE).write_text(json.dumps(arguments, indent=1) + "\n")
    status = launch(arguments)
    if status in STOP_STATUSES:
        raise SuiteStopped(run.label, status)
    if status == USER_ERROR_STATUS:
        raise UserInputError(
            f"The {run.label} run stopped on a configuration or data error (its message is above); "
            "fix it and run the suite again, finished runs will be skipped."
        )
    if status != 0 or not (run.run_dir / FINISHED_FILE).is_file():
        return f"exit status {status}, no {FINISHED_FILE}"
    return None


def _warn_if_trained_otherwise(run: PlannedRun, options: SuiteOptions, prefix: str) -> None:
    """Say when a finished run's recorded command differs from the one this suite would start: its result
    is reused in the table all the same (a changed --override or --config would otherwise pass unseen)."""
    recorded = run.run_dir / COMMAND_FILE
    if not recorded.is_file():
        return  # trained before the suite recorded commands
    from_mnli = options.mnli_init and run.task in MNLI_INIT_TASKS
    pretrained = best_mnli_export(options.output_dir, run.seed) if from_mnli else None
    then, now = (
        option_values(json.loads(recorded.read_text())),
        option_values(run_arguments(run, options, pretrained)),
    )
    changed = sorted(key for key in then.keys() | now.keys() if then.get(key) != now.get(key))
    if changed:
        shown = ", ".join(
            f"{key} {then.get(key, '(unset)')} then, {now.get(key, '(unset)')} now" for key in changed[:3]
        )
        print(
            f"{prefix}: warning: trained with other settings ({shown}); its result is reused: delete"
            f" {run.run_dir} to train it with this suite's."
        )


def option_values(arguments: list[str]) -> dict[str, str]:
    """A command line's ``--key value`` pairs, by key; a repeated key (``--config``) joins its values."""
    values: dict[str, list[str]] = {}
    for key, value in zip(arguments, arguments[1:], strict=False):
        if key.startswith("--"):
            values.setdefault(key, []).append(value)
    return {key: " ".join(parts) for key, parts in values.items()}


def _resumed(run: PlannedRun, arguments: list[str], launch: Callable[[list[str]], int], prefix: str) -> bool:
    """Continue a killed run from its ``last.ckpt`` when it has one; whether that finished the run.

    A failed resume (an unreadable checkpoint, say) is not final: the caller then starts the run over.
    """
    last = run.run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return False
    print(f"{prefix}: resuming in {run.run_dir} from {last}")
    status = launch([*arguments, "--ckpt_path", str(last)])
    if status in STOP_STATUSES:
        raise SuiteStopped(run.label, status)
    if status == 0 and (run.run_dir / FINISHED_FILE).is_file():
        return True
    print(f"{prefix}: resuming failed (exit status {status}); starting the run over")
    return False


def _print_command(run: PlannedRun, options: SuiteOptions, prefix: str) -> None:
    """A dry run's line: the run's state and the command it would start."""
    pretrained = None
    if options.mnli_init and run.task in MNLI_INIT_TASKS:
        # Where the MNLI start is expected: exact without a grid, a placeholder with one.
        point = options.grid[0].name if len(options.grid) == 1 else "<best grid point>"
        pretrained = options.output_dir / "mnli" / (point or "") / f"seed_{run.seed}" / "export"
    state = "finished, would be skipped" if (run.run_dir / FINISHED_FILE).is_file() else "would train"
    command = shlex.join(["python", "-m", "neobert_tasks", *run_arguments(run, options, pretrained)])
    print(f"{prefix}: {state}: {command}")
