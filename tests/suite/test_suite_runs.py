"""The suite training for real, in-process, on the shared GLUE copy with the tiny model: every task ×
seed in its own folder, the table's numbers against each run's ``metrics.json``, a second invocation
that skips finished runs, a killed run that resumes from its ``last.ckpt``, a tiny grid, and RTE
starting from the MNLI run of its seed. Each run takes a few seconds (see tests/suite/helpers.py)."""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from neobert_tasks.suite import collect_results
from tests.suite.helpers import TINY_GRID, best_metrics, head_reinit_supported, quick_args, run_suite

pytestmark = pytest.mark.slow  # the suite trains for real: a few seconds per run

TASKS, SEEDS = ("rte", "stsb"), (0, 1)
MAIN_METRIC = {"rte": "val/accuracy", "stsb": "val/pearson"}


@pytest.fixture(scope="module")
def finished_suite(tmp_path_factory):
    """RTE and STS-B × seeds 0 and 1 from scratch (MNLI init off), with a stale folder left for seed 1."""
    tmp_path = tmp_path_factory.mktemp("suite")
    output_dir = tmp_path / "out"
    stale = output_dir / "rte" / "seed_1"
    stale.mkdir(parents=True)
    (stale / "left_by_a_killed_run.txt").write_text("")
    argv = ["glue", "--tasks", *TASKS, "--seeds", *map(str, SEEDS), "--mnli_init", "false"]
    argv += ["--output_dir", str(output_dir), *quick_args(tmp_path)]
    status, output = run_suite(argv)
    return SimpleNamespace(output_dir=output_dir, argv=argv, status=status, output=output)


def test_every_task_and_seed_runs_in_its_folder_and_the_table_is_right(finished_suite):
    output_dir = finished_suite.output_dir
    assert finished_suite.status == 0, finished_suite.output[-3000:]
    assert "4 runs trained, 0 skipped, 0 failed." in finished_suite.output
    assert f"clearing {output_dir / 'rte' / 'seed_1'}" in finished_suite.output
    assert not (output_dir / "rte" / "seed_1" / "left_by_a_killed_run.txt").exists()
    rows = {row["task"]: row for row in collect_results(output_dir)}
    assert list(rows) == ["stsb", "rte", "glue_average"]
    for task in TASKS:
        scores = [100 * best_metrics(output_dir / task / f"seed_{seed}")[MAIN_METRIC[task]] for seed in SEEDS]
        assert rows[task]["mean"] == pytest.approx(statistics.fmean(scores))
        assert rows[task]["std"] == pytest.approx(statistics.stdev(scores))
        assert rows[task]["seeds"] == 2 and rows[task]["init"] == "random"
        config = yaml.safe_load((output_dir / task / "seed_0" / "config.yaml").read_text())
        assert config["seed_everything"] == 0 and config["data"]["init_args"]["task_name"] == task
    spearman = [100 * best_metrics(output_dir / "stsb" / f"seed_{seed}")["val/spearman"] for seed in SEEDS]
    assert rows["stsb"]["second_mean"] == pytest.approx(statistics.fmean(spearman))
    assert rows["glue_average"]["mean"] == pytest.approx((rows["rte"]["mean"] + rows["stsb"]["mean"]) / 2)
    saved = json.loads((output_dir / "glue_results.json").read_text())
    assert [row["task"] for row in saved] == list(rows)
    assert (output_dir / "glue_results.md").read_text() in finished_suite.output  # printed as saved
    assert "| RTE | accuracy |" in finished_suite.output


def test_a_second_invocation_skips_finished_runs(finished_suite):
    metrics_files = sorted(finished_suite.output_dir.glob("*/seed_*/metrics.json"))
    assert len(metrics_files) == 4
    before = [path.stat().st_mtime_ns for path in metrics_files]
    status, output = run_suite(finished_suite.argv)
    assert status == 0
    assert output.count("skipped, finished before") == 4
    assert "0 runs trained, 4 skipped, 0 failed." in output and "training in" not in output
    assert [path.stat().st_mtime_ns for path in metrics_files] == before
    assert "trained with other settings" not in output
    # Other settings than those the finished runs were trained with: their results are reused, not silently.
    status, output = run_suite([*finished_suite.argv, "--override", "model.init_args.learning_rate=0.5"])
    assert status == 0 and output.count("skipped, finished before") == 4
    assert output.count("warning: trained with other settings (--model.init_args.learning_rate") == 4
    assert "(unset) then, 0.5 now); its result is reused: delete" in output


def test_a_killed_run_resumes_from_its_last_checkpoint(finished_suite):
    run_dir = finished_suite.output_dir / "stsb" / "seed_0"
    expected = best_metrics(run_dir)
    (run_dir / "metrics.json").unlink()  # what a run killed before its end leaves: no metrics.json
    shutil.rmtree(run_dir / "export")
    argv = [*finished_suite.argv]
    argv[argv.index("--tasks") + 1 : argv.index("--seeds")] = ["stsb"]
    status, output = run_suite(argv)
    assert status == 0
    assert f"stsb seed 0: resuming in {run_dir} from {run_dir / 'checkpoints' / 'last.ckpt'}" in output
    assert best_metrics(run_dir) == pytest.approx(expected)
    assert (run_dir / "export" / "config.json").is_file()


def test_tiny_grid_runs_every_point_and_reports_the_best(tmp_path):
    output_dir = tmp_path / "out"
    argv = ["glue", "--tasks", "stsb", "--seeds", "0", "--mnli_init", "false", "--grid", str(TINY_GRID)]
    status, output = run_suite([*argv, "--output_dir", str(output_dir), *quick_args(tmp_path)])
    assert status == 0, output[-3000:]
    points = {"batch8_lr0.0001_wd1e-05": 1e-4, "batch8_lr0.001_wd1e-05": 1e-3}
    scores = {}
    for point, learning_rate in points.items():
        run_dir = output_dir / "stsb" / point / "seed_0"
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert config["model"]["init_args"]["learning_rate"] == learning_rate
        assert config["data"]["init_args"]["batch_size"] == 8
        scores[point] = 100 * best_metrics(run_dir)["val/pearson"]
    row = collect_results(output_dir)[0]
    best = max(scores, key=scores.get)
    assert (row["point"], row["points"], row["mean"]) == (best, 2, pytest.approx(scores[best]))
    assert row["learning_rate"] == points[best]
    assert f"| {best} | {points[best]:g} | 8 |" in output


def test_rte_starts_from_the_mnli_run_of_its_seed(tmp_path):
    if not head_reinit_supported(tmp_path / "probe"):
        pytest.skip("loading a 3-label checkpoint into a 2-label task does not re-initialise the head yet")
    output_dir = tmp_path / "out"
    status, output = run_suite(
        ["glue", "--tasks", "rte", "--seeds", "0", "--output_dir", str(output_dir), *quick_args(tmp_path)]
    )
    assert status == 0, output[-3000:]
    mnli_export = output_dir / "mnli" / "seed_0" / "export"
    assert output.index("[1/2] mnli seed 0: training") < output.index("[2/2] rte seed 0: training")
    assert f"starting from {mnli_export}" in output
    model = yaml.safe_load((output_dir / "rte" / "seed_0" / "config.yaml").read_text())["model"]["init_args"]
    assert (model["pretrained"], model["model_config"]) == (str(mnli_export), None)
    rows = {row["task"]: row for row in collect_results(output_dir)}
    assert (rows["rte"]["init"], rows["mnli"]["init"]) == ("mnli", "random")
    assert Path(mnli_export / "config.json").is_file()
