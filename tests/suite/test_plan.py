"""Planning without training: grid files, task lists, each run's folder and arguments, the dry run, and
the one-sentence errors (exit status 2) for mistakes. Only the repository's configs are needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from neobert_tasks.errors import ConfigError, MissingPathError
from neobert_tasks.suite.grid import load_grid
from neobert_tasks.suite.plan import SuiteOptions, check_paths, plan_runs, resolve_tasks, run_arguments
from tests.conftest import REPO_ROOT
from tests.suite.helpers import TINY_GRID, run_suite

PAPER_GRID = REPO_ROOT / "configs" / "suite" / "glue_grid.yaml"
# The paper's best (batch, learning rate, weight decay) per task, from ../shared/neobert/CHECKPOINT.md.
PAPER_BEST = {
    "cola": (8, 8e-6, 1e-5),
    "mnli": (16, 5e-6, 1e-5),
    "mrpc": (2, 1e-5, 1e-5),
    "qnli": (8, 5e-6, 1e-5),
    "qqp": (32, 8e-6, 1e-5),
    "rte": (32, 5e-6, 1e-5),
    "sst2": (32, 8e-6, 1e-2),
    "stsb": (32, 2e-5, 1e-5),
}


def test_the_paper_grid_holds_every_task_winner():
    points = load_grid(PAPER_GRID)
    assert len(points) == 5 * 6 * 2
    settings = {
        tuple(
            dict(point.settings)[key]
            for key in ("data.init_args.batch_size", "model.init_args.learning_rate")
        )
        + (dict(point.settings)["model.init_args.weight_decay"],)
        for point in points
    }
    assert set(PAPER_BEST.values()) <= settings
    assert points[0].name == "batch2_lr5e-06_wd0.01"
    assert points[0].arguments()[:2] == ["--data.init_args.batch_size", "2"]
    assert len({point.name for point in points}) == len(points)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("learning_rate: [1]", "needs a 'parameters' section"),
        ("parameters: {learning_rate: [1]}", "is not a dotted config key"),
        ("parameters: {model.init_args.learning_rate: []}", "must be a non-empty list"),
        ("parameters: {model.init_args.learning_rate: [[1]]}", "may only list numbers"),
        ("parameters: [", "is not valid YAML"),
    ],
)
def test_malformed_grids_are_refused(tmp_path, text, message):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_grid(path)
    with pytest.raises(MissingPathError):
        load_grid(tmp_path / "absent.yaml")


def test_task_lists_put_mnli_first_and_add_it_for_the_transfer_tasks():
    assert resolve_tasks(["all"], mnli_init=True)[0] == "mnli"
    assert len(resolve_tasks(["all", "rte"], mnli_init=False)) == 9
    assert resolve_tasks(["rte", "cola"], mnli_init=True) == ["mnli", "rte", "cola"]
    assert resolve_tasks(["RTE", "cola"], mnli_init=False) == ["rte", "cola"]
    assert resolve_tasks(["cola"], mnli_init=True) == ["cola"]


def test_run_folders_and_arguments(tmp_path):
    options = SuiteOptions(
        tasks=["mnli", "rte"],
        seeds=[0, 1],
        output_dir=tmp_path,
        configs=[Path("preset.yaml")],
        overrides=["--trainer.max_epochs", "3"],
        passthrough=["--trainer.log_every_n_steps", "5"],
        grid=load_grid(TINY_GRID),
        data_dir=Path("/data/glue"),
    )
    runs = plan_runs(options)
    assert [(run.task, run.seed) for run in runs[:4]] == [("mnli", 0), ("mnli", 1)] * 2
    assert runs[0].run_dir == tmp_path / "mnli" / "batch8_lr0.0001_wd1e-05" / "seed_0"
    arguments = run_arguments(runs[-1], options, pretrained=Path("/mnli/export"))
    assert arguments[:5] == [
        "fit",
        "--config",
        str(options.task_config_dir / "rte.yaml"),
        "--config",
        "preset.yaml",
    ]
    logger = json.loads(arguments[arguments.index("--trainer.logger") + 1])
    assert {entry["init_args"]["version"] for entry in logger} == {"seed_1"}
    assert logger[0]["init_args"]["save_dir"] == str(runs[-1].run_dir.parent)
    text = " ".join(arguments)
    assert "--seed_everything 1 --data.init_args.seed 1 --data.init_args.data_dir /data/glue/rte" in text
    assert "--model.init_args.pretrained /mnli/export --model.init_args.model_config null" in text
    # The user's overrides and passthrough arguments come last, so they win.
    assert arguments[-4:] == ["--trainer.max_epochs", "3", "--trainer.log_every_n_steps", "5"]


def test_dry_run_prints_every_run_mnli_first(tmp_path):
    status, output = run_suite(
        ["glue", "--tasks", "rte", "cola", "--seeds", "0", "1", "--output_dir", tmp_path, "--dry_run"]
    )
    assert status == 0
    lines = [line for line in output.splitlines() if line.startswith("[")]
    assert len(lines) == 6 and all("would train: python -m neobert_tasks fit" in line for line in lines)
    assert [line.split(":")[0] for line in lines[:2]] == ["[1/6] mnli seed 0", "[2/6] mnli seed 1"]
    assert f"--model.init_args.pretrained {tmp_path}/mnli/seed_1/export" in lines[3]
    assert "--model.init_args.pretrained" not in lines[5]  # CoLA starts from the pretrained model
    assert not any(tmp_path.iterdir())  # nothing run, nothing written


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--tasks", "rte", "nope"], "--tasks: unknown GLUE task 'nope'"),
        (["--override", "trainer.max_epochs"], "is not key=value"),
        (
            ["--grid", str(TINY_GRID), "--override", "data.init_args.batch_size=4"],
            "is also a --grid parameter",
        ),
        (["--config", "absent.yaml"], "--config: the file 'absent.yaml' does not exist."),
        (["--grid", "absent.yaml"], "the grid file 'absent.yaml' does not exist."),
        (["--data_dir", "absent"], "--data_dir: the folder 'absent' does not exist."),
    ],
)
def test_mistakes_end_with_one_sentence_and_status_2(tmp_path, capsys, arguments, message):
    status, _ = run_suite(["glue", "--output_dir", tmp_path, "--dry_run", *arguments])
    error = capsys.readouterr().err
    assert status == 2 and message in error
    assert error.startswith("neobert_tasks.suite: error: ") and error.count("\n") == 1


def test_tasks_without_data_are_named(tmp_path, capsys):
    for task, splits in {"rte": ["train", "validation"], "qqp": ["train"], "mnli": ["train"]}.items():
        (tmp_path / task).mkdir()
        for split in splits:
            (tmp_path / task / f"{split}.parquet").touch()
    common = ["glue", "--seeds", "0", "--data_dir", tmp_path, "--output_dir", tmp_path / "out", "--dry_run"]
    status, _ = run_suite([*common, "--tasks", "rte", "qqp", "cola"])
    error = capsys.readouterr().err
    assert status == 2 and error.count("\n") == 1
    assert f"mnli has no validation_matched split in {tmp_path / 'mnli'}" in error  # needed for RTE
    assert (
        f"qqp has no validation split in {tmp_path / 'qqp'}; cola has no folder {tmp_path / 'cola'}" in error
    )
    # Skipping leaves out the tasks without data, and RTE with MNLI, whose start is missing.
    status, output = run_suite([*common, "--tasks", "rte", "qqp", "cola", "--missing_data", "skip"])
    assert status == 2 and "No task of --tasks has data" in capsys.readouterr().err
    status, output = run_suite(
        [*common, "--tasks", "rte", "qqp", "--mnli_init", "false", "--missing_data", "skip"]
    )
    assert status == 0 and "Skipping tasks without data: qqp has no validation split" in output
    assert "1 runs (rte × seeds 0" in output


def test_a_task_config_folder_that_is_not_there_says_where_the_configs_come_from(tmp_path):
    """A wheel install has no configs/glue beside the package, where the default points."""
    missing = tmp_path / "site-packages" / "configs" / "glue"
    options = SuiteOptions(tasks=["sst2"], seeds=[0], output_dir=tmp_path, task_config_dir=missing)
    with pytest.raises(MissingPathError, match=r"come with the source repository.*--task_config_dir"):
        check_paths(options)
