"""``--ckpt_path best|last``: with a run's own config.yaml, that run's checkpoints; otherwise the newest run's
under ``trainer.default_root_dir`` (found once as ``validate --config runs/x/version_0/config.yaml
--ckpt_path best`` scoring, and writing into, version_1)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from jsonargparse import Namespace

from neobert_tasks.checkpoint_paths import check_base_model_present, resolve_checkpoint_path
from neobert_tasks.errors import ConfigError, MissingPathError, StorageError
from neobert_tasks.run_directory import check_writable, run_of_config


def make_run(root: Path, version: int, mtime: float, best: bool = True, last: bool = True) -> Path:
    """A finished run folder: config.yaml, checkpoints/ and metrics.json naming its best checkpoint."""
    run = root / f"version_{version}"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("seed_everything: 0\n")
    best_path = run / "checkpoints" / "epoch=0-step=7.ckpt"
    if best:
        best_path.touch()
    if last:
        (run / "checkpoints" / "last.ckpt").touch()
    for path in [*run.rglob("*.ckpt"), run / "metrics.json"]:
        if path.name == "metrics.json":
            path.write_text(json.dumps({"best_checkpoint": str(best_path) if best else None}))
        os.utime(path, (mtime, mtime))
    return run


def config_for(root: Path, ckpt_path: str) -> Namespace:
    return Namespace(ckpt_path=ckpt_path, trainer=Namespace(default_root_dir=str(root)))


@pytest.fixture
def runs(tmp_path) -> tuple[Path, Path, Path]:
    root = tmp_path / "runs"
    return root, make_run(root, 0, 100), make_run(root, 1, 200)


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_best_is_the_given_runs_not_the_newest(runs, subcommand):
    root, older, newer = runs
    config = config_for(root, "best")
    assert resolve_checkpoint_path(config, subcommand, ["--config", str(older / "config.yaml")]) is None
    assert config.ckpt_path == str(older / "checkpoints" / "epoch=0-step=7.ckpt")
    config = config_for(root, "best")  # a task's config: the newest finished run under the root
    resolve_checkpoint_path(config, subcommand, ["--config", "configs/quickstart.yaml"])
    assert config.ckpt_path == str(newer / "checkpoints" / "epoch=0-step=7.ckpt")


def test_last_is_the_given_runs_and_fit_continues_its_folder(runs):
    root, older, newer = runs
    config = config_for(root, "last")
    assert resolve_checkpoint_path(config, "fit", [f"--config={older / 'config.yaml'}"]) == 0
    assert config.ckpt_path == str(older / "checkpoints" / "last.ckpt")
    config = config_for(root, "last")
    assert resolve_checkpoint_path(config, "predict", ["--config", str(older / "config.yaml")]) is None
    assert config.ckpt_path == str(older / "checkpoints" / "last.ckpt")
    config = config_for(root, "last")
    assert resolve_checkpoint_path(config, "fit", []) == 1
    assert config.ckpt_path == str(newer / "checkpoints" / "last.ckpt")


def test_a_run_without_a_best_checkpoint_points_to_last(tmp_path):
    run = make_run(tmp_path / "runs", 0, 100, best=False)  # trained without validation
    config = config_for(tmp_path / "runs", "best")
    with pytest.raises(MissingPathError, match=r"names no best checkpoint .* give --ckpt_path last"):
        resolve_checkpoint_path(config, "predict", ["--config", str(run / "config.yaml")])
    with pytest.raises(MissingPathError, match=r"no finished run .* give --ckpt_path last"):
        resolve_checkpoint_path(config, "predict", [])


def test_a_run_without_last_starts_fit_from_scratch_and_refuses_predict(tmp_path):
    run = make_run(tmp_path / "runs", 0, 100, last=False)
    arguments = ["--config", str(run / "config.yaml")]
    config = config_for(tmp_path / "runs", "last")
    with pytest.warns(UserWarning, match="No last.ckpt in .*: starting from scratch"):
        assert resolve_checkpoint_path(config, "fit", arguments) is None
    assert config.ckpt_path is None
    with pytest.raises(MissingPathError, match=r"no last.ckpt in .* to predict"):
        resolve_checkpoint_path(config_for(tmp_path / "runs", "last"), "predict", arguments)


def test_only_a_run_folders_config_yaml_is_a_run(runs, tmp_path):
    _, older, _ = runs
    assert run_of_config(["--config", "a.yaml", "--config", str(older / "config.yaml")]) == older
    assert (
        run_of_config(["--config", str(older / "config.yaml"), "--config", "configs/presets/cpu.yaml"])
        == older
    )
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.yaml").write_text("{}\n")
    assert run_of_config(["--config", str(tmp_path / "elsewhere" / "config.yaml")]) is None
    assert run_of_config(["--trainer.max_epochs", "1"]) is None


@pytest.mark.parametrize(
    ("lora", "why"),
    [(True, "its checkpoint holds the LoRA adapters and the head only"), (False, "its checkpoint predates")],
)
def test_an_evaluation_that_must_load_a_gone_base_folder_says_why(tmp_path, lora, why):
    gone = str(tmp_path / "base")
    with pytest.raises(
        MissingPathError, match=rf"'{gone}' does not exist, and predict needs its weights: {why}"
    ):
        check_base_model_present(gone, lora, "predict")
    (tmp_path / "base").mkdir()
    check_base_model_present(gone, lora, "predict")
    check_base_model_present("chandar-lab/NeoBERT", lora, "predict")  # a hub id: loading says what fails


def test_fit_from_best_is_refused_in_one_sentence(runs):
    # Lightning's own "best" (a fit earlier in the process) ended in its traceback about a ModelCheckpoint.
    root, older, _ = runs
    for arguments in ([], ["--config", str(older / "config.yaml")]):
        with pytest.raises(ConfigError, match=r"fit --ckpt_path best: a fit resumes from its last\.ckpt"):
            resolve_checkpoint_path(config_for(root, "best"), "fit", arguments)


def test_a_moved_run_resumes_where_its_config_yaml_now_is(runs, tmp_path):
    root, older, _ = runs
    (tmp_path / "moved").mkdir()
    moved = older.rename(tmp_path / "moved" / "version_0")
    config = config_for(root, "last")  # the root its config.yaml recorded
    assert resolve_checkpoint_path(config, "fit", ["--config", str(moved / "config.yaml")]) == 0
    assert config.trainer.default_root_dir == str(moved.parent)
    # Renamed to a name of its own: resumed under that name (it became a new version_N).
    named = moved.rename(tmp_path / "moved" / "my_run")
    config = config_for(root, "last")
    assert resolve_checkpoint_path(config, "fit", ["--config", str(named / "config.yaml")]) == "my_run"
    moved = named.rename(tmp_path / "moved" / "version_0")
    # A root typed on the command line starts a new run there instead.
    config = config_for(root, "last")
    arguments = ["--config", str(moved / "config.yaml"), f"--trainer.default_root_dir={root}"]
    assert resolve_checkpoint_path(config, "fit", arguments) is None
    assert config.trainer.default_root_dir == str(root)


def test_a_new_run_folder_taken_by_another_command_meanwhile_is_refused(tmp_path):
    folder = tmp_path / "runs" / "version_0"
    check_writable(folder, new=True)
    with pytest.raises(StorageError, match=r"'.*version_0' was created by another command .* same moment"):
        check_writable(folder, new=True)
    check_writable(folder)  # a resumed or evaluated run's folder exists, as it should


@pytest.mark.parametrize("subcommand", ["validate", "predict"])
def test_a_copied_run_reads_its_own_best_checkpoint_not_the_originals(runs, tmp_path, subcommand):
    _, older, _ = runs
    copy = tmp_path / "copies" / "version_0"
    shutil.copytree(older, copy)  # metrics.json still names the original's file, which still exists
    config = config_for(tmp_path / "copies", "best")
    resolve_checkpoint_path(config, subcommand, ["--config", str(copy / "config.yaml")])
    assert config.ckpt_path == str(copy / "checkpoints" / "epoch=0-step=7.ckpt")


def test_a_root_under_home_is_expanded(runs, monkeypatch):
    root, _, newer = runs
    monkeypatch.setenv("HOME", str(root.parent))
    config = config_for(Path("~") / root.name, "last")
    assert resolve_checkpoint_path(config, "fit", []) == 1  # not a folder named "~" in the working directory
    assert config.ckpt_path == str(newer / "checkpoints" / "last.ckpt")


def test_a_root_that_is_a_file_is_not_taken_for_a_run_started_meanwhile(tmp_path):
    (tmp_path / "x").write_text("")
    with pytest.raises(StorageError, match=r"Cannot write the run folder '.*x/version_0' \("):
        check_writable(tmp_path / "x" / "version_0", new=True)
