"""The README's quickstart, ``python -m neobert_tasks fit --config configs/quickstart.yaml``, run as is.

It must work on a fresh clone: everything it reads (the sentiment sample in ``data/quickstart`` and the
tokenizer in ``data/tokenizer``) ships with the repository, nothing is downloaded, and it learns enough
in about a minute on a CPU to beat chance clearly. This test needs nothing outside the repository.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import yaml

from tests.cli.helpers import CONFIGS, run_cli
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow  # runs the command line end to end

QUICKSTART = CONFIGS / "quickstart.yaml"
# Majority class of data/quickstart/validation.csv: 210 of 400 rows are positive. The config reaches about
# 0.72; the margin leaves room for other CPUs and library versions giving other (seeded) random numbers.
MAJORITY_ACCURACY = 210 / 400
MIN_ACCURACY = 0.65


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the run: the quickstart must not need the network."""

    def refuse(sock, address, *args, **kwargs):
        raise AssertionError(f"the quickstart tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture
def one_thread():
    """Train on one thread: the model is too small to gain from a second, and on a busy machine (tests
    running side by side) two threads wait on each other and make the run several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_config_reads_only_files_of_the_repository():
    init_args = yaml.safe_load(QUICKSTART.read_text())["data"]["init_args"]
    for key in ("tokenizer", "data_dir"):
        path = REPO_ROOT / init_args[key]
        assert not Path(init_args[key]).is_absolute(), f"{key} must be relative to the repository root"
        assert path.resolve().is_relative_to(REPO_ROOT), f"{key} {path} is outside the repository"
        assert path.is_dir(), f"{key} {path} is not in the repository"
    assert {path.name for path in (REPO_ROOT / init_args["data_dir"]).iterdir()} >= {
        "train.csv",
        "validation.csv",
    }


def test_quickstart_trains_beats_chance_and_exports(tmp_path, monkeypatch, capfd, no_network, one_thread):
    monkeypatch.chdir(REPO_ROOT)  # the README runs it from the root, which its relative paths assume
    run_dir = run_cli(
        "fit",
        "--config",
        QUICKSTART,
        "--trainer.default_root_dir",
        tmp_path / "runs",
        "--data.init_args.cache_dir",
        tmp_path / "datasets_cache",
        tmp_path=tmp_path,
    )
    assert run_dir == tmp_path / "runs" / "version_0"

    # The progress bar is on and shows the validation metric.
    output = capfd.readouterr()
    assert "val/accuracy" in output.out + output.err

    export_dir = run_dir / "export"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert (export_dir / name).is_file(), f"{name} is missing from {export_dir}"
    config = json.loads((export_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}

    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["monitor"] == "val/accuracy"
    assert summary["best_score"] > MIN_ACCURACY > MAJORITY_ACCURACY
    # The scores recorded are those of the exported (best) epoch, not of the sanity check before training.
    best = summary["best_metrics"]
    assert best["val/accuracy"] == pytest.approx(summary["best_score"])
    assert best["step"] > 0
    assert Path(summary["best_checkpoint"]).name.startswith(f"epoch={best['epoch']}-")
