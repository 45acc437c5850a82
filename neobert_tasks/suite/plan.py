"""Planning a GLUE suite: which runs, in which folders, with which neobert_tasks command-line arguments.

Every run has a fixed folder, ``<output_dir>/<task>/[<grid point>/]seed_<n>``, which is the run directory
of the neobert_tasks CLI (the loggers' version is set to ``seed_<n>``), so ``config.yaml``,
``metrics.json``, ``checkpoints/`` and ``export/`` land there and a later invocation finds them again.
MNLI runs come first: with ``mnli_init`` the RTE, STS-B, MRPC and QNLI runs of a seed start from the
best MNLI run of that seed, as in the NeoBERT paper.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from neobert_tasks.cli import LOGGER_CLASSES
from neobert_tasks.data.glue import GLUE_TASKS
from neobert_tasks.data.sources import find_split_files
from neobert_tasks.errors import ConfigError, MissingPathError
from neobert_tasks.suite.grid import DEFAULT_POINT, GridPoint

# Tasks the NeoBERT paper fine-tunes from its best MNLI checkpoint instead of the pretrained model.
MNLI_INIT_TASKS = ("rte", "stsb", "mrpc", "qnli")
# The repository's per-task configs; a non-editable install has none and needs --task_config_dir.
DEFAULT_TASK_CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "glue"


@dataclass
class SuiteOptions:
    """Everything a GLUE suite needs to plan and start its runs (the ``glue`` command's options)."""

    tasks: list[str]
    seeds: list[int]
    output_dir: Path
    configs: list[Path] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    passthrough: list[str] = field(default_factory=list)
    grid: list[GridPoint] = field(default_factory=lambda: [DEFAULT_POINT])
    mnli_init: bool = True
    data_dir: Path | None = None
    task_config_dir: Path = DEFAULT_TASK_CONFIG_DIR


@dataclass(frozen=True)
class PlannedRun:
    """One fine-tuning run of the suite: a task, a seed and a grid point, in its own folder."""

    task: str
    seed: int
    point: GridPoint
    run_dir: Path

    @property
    def label(self) -> str:
        """Short description for progress lines, e.g. ``rte seed 0 (lr5e-06_batch32_wd1e-05)``."""
        return f"{self.task} seed {self.seed}" + (f" ({self.point.name})" if self.point.name else "")


def resolve_tasks(names: list[str], mnli_init: bool) -> list[str]:
    """The tasks to run, MNLI first: ``all`` means all nine; MNLI is added when a transfer task needs it."""
    tasks: list[str] = []
    for name in names:
        for task in list(GLUE_TASKS) if name == "all" else [name.lower()]:
            if task not in GLUE_TASKS:
                raise ConfigError(
                    f"--tasks: unknown GLUE task '{name}'; choose from all, {', '.join(GLUE_TASKS)}."
                )
            if task not in tasks:
                tasks.append(task)
    if mnli_init and "mnli" not in tasks and any(task in MNLI_INIT_TASKS for task in tasks):
        tasks.append("mnli")
    return sorted(tasks, key=lambda task: task != "mnli")  # stable: the others keep their order


def missing_data(tasks: list[str], data_dir: Path) -> dict[str, str]:
    """For each task whose folder under ``data_dir`` lacks its train or (first) validation split, why."""
    problems = {}
    for task in tasks:
        directory = data_dir / task
        if not directory.is_dir():
            problems[task] = f"{task} has no folder {directory}"
            continue
        splits = find_split_files(directory)
        absent = [split for split in ("train", GLUE_TASKS[task].validation_splits[0]) if split not in splits]
        if absent:
            problems[task] = f"{task} has no {' or '.join(absent)} split in {directory}"
    return problems


def drop_tasks_without_data(tasks: list[str], problems: dict[str, str], mnli_init: bool) -> list[str]:
    """``tasks`` less those with missing data, and less the MNLI-initialised ones when MNLI's is missing."""
    dropped = set(problems)
    if mnli_init and "mnli" in dropped:
        dropped |= set(MNLI_INIT_TASKS)
    return [task for task in tasks if task not in dropped]


def missing_data_message(problems: dict[str, str]) -> str:
    """One sentence listing every task without data and what to do about it."""
    return (
        f"Missing GLUE data: {'; '.join(problems.values())}; drop "
        f"{'this task' if len(problems) == 1 else 'these tasks'} from --tasks or pass --missing_data skip."
    )


def plan_runs(options: SuiteOptions) -> list[PlannedRun]:
    """Every run of the suite in the order it starts: per task (MNLI first), per grid point, per seed."""
    runs = []
    for task in options.tasks:
        for point in options.grid:
            task_dir = options.output_dir / task / (point.name or "")
            runs.extend(PlannedRun(task, seed, point, task_dir / f"seed_{seed}") for seed in options.seeds)
    return runs


def run_arguments(run: PlannedRun, options: SuiteOptions, pretrained: Path | None = None) -> list[str]:
    """The ``neobert_tasks fit`` arguments of ``run``; ``pretrained``: the MNLI export to start from.

    Order matters, later arguments win: the task config, the extra presets, the suite's own settings
    (folders, seed, data, grid point, MNLI start), then the user's overrides and passthrough arguments.
    """
    configs = [options.task_config_dir / f"{run.task}.yaml", *options.configs]
    arguments = ["fit", *(part for config in configs for part in ("--config", str(config)))]
    # The CLI's own loggers, with the version folder fixed to seed_<n> instead of the next version_N.
    root = str(run.run_dir.parent)
    logger_arguments = {"save_dir": root, "name": "", "version": run.run_dir.name}
    loggers = [{"class_path": name, "init_args": logger_arguments} for name in LOGGER_CLASSES]
    arguments += ["--trainer.default_root_dir", root, "--trainer.logger", json.dumps(loggers)]
    # The seed also drives the training order (the datamodule's own seed), not only initialisation and
    # dropout: seeds then differ the way independent fine-tuning runs do.
    arguments += ["--seed_everything", str(run.seed), "--data.init_args.seed", str(run.seed)]
    if options.data_dir is not None:
        arguments += ["--data.init_args.data_dir", str(options.data_dir / run.task)]
    arguments += run.point.arguments()
    if pretrained is not None:
        # model_config would win over pretrained (the tiny preset sets one): the MNLI weights must load.
        arguments += ["--model.init_args.pretrained", str(pretrained)]
        arguments += ["--model.init_args.model_config", "null"]
    return arguments + options.overrides + options.passthrough


def parse_overrides(overrides: list[str], grid: list[GridPoint]) -> list[str]:
    """``key=value`` strings as command-line arguments; a key the grid varies is refused."""
    grid_keys = {key for point in grid for key, _ in point.settings}
    arguments = []
    for override in overrides:
        key, separator, value = override.partition("=")
        key = key.strip().removeprefix("--")
        if not separator or not key:
            raise ConfigError(f"--override '{override}' is not key=value (e.g. trainer.max_epochs=3).")
        if key in grid_keys:
            raise ConfigError(f"--override {key} is also a --grid parameter; keep it in one of the two.")
        arguments += [f"--{key}", value]
    return arguments


def check_paths(options: SuiteOptions) -> None:
    """Refuse before any run starts when a config, the task configs or the data folder is absent."""
    for config in options.configs:
        if not config.is_file():
            raise MissingPathError(f"--config: the file '{config}' does not exist.")
    for task in options.tasks:
        if not options.task_config_dir.is_dir():
            raise MissingPathError(
                f"--task_config_dir: the folder '{options.task_config_dir}' does not exist; the GLUE configs"
                " come with the source repository, not with an installed package: pass --task_config_dir"
                " <clone>/configs/glue."
            )
        if not (options.task_config_dir / f"{task}.yaml").is_file():
            raise MissingPathError(
                f"--task_config_dir: '{options.task_config_dir}' has no {task}.yaml (see configs/glue)."
            )
    if options.data_dir is not None and not options.data_dir.is_dir():
        raise MissingPathError(f"--data_dir: the folder '{options.data_dir}' does not exist.")
