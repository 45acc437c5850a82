"""Real two-process runs (``configs/presets/ddp_cpu.yaml``: DDP over gloo on the CPU) match one process.

Lightning's ``ddp`` strategy starts the second process by re-running the command line, so the two-process
runs are ``python -m neobert_tasks …`` subprocesses; the one-process references run in-process (cheaper: no
second import of torch and transformers). The validation set has an odd number of examples (65) in batches
of 8, so the ranks hold 33 and 32 examples in 5 and 4 batches: a sampler that pads the split, or a mean
over ranks instead of over examples, shows up as a different score.

One two-process ``fit`` (fresh datasets cache) trains the tiny model; its best checkpoint is then validated
and predicted with two processes and with one, and the results must agree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.cli.helpers import CONFIGS, glue_args, read_metrics_csv, run_cli
from tests.conftest import REPO_ROOT, shared_path

pytestmark = [
    pytest.mark.slow,  # two-process runs of the command line
    pytest.mark.skipif(
        not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
        reason="torch.distributed with the gloo backend is not available",
    ),
]

DDP_CPU = CONFIGS / "presets" / "ddp_cpu.yaml"
EVAL_SAMPLES = 65
# Not a divisor of EVAL_SAMPLES, nor of either rank's share (33 and 32 examples: 5 and 4 batches).
BATCH_SIZE = 8
# A hung collective (ranks disagreeing on what to sync) must fail the test, not stall the suite.
RUN_TIMEOUT_S = 300
# Variables a surrounding launcher may have set; left in place they would make Lightning join its job.
DISTRIBUTED_ENV = (
    "LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK",
)  # fmt: skip


def run_args(root: Path, cache: Path) -> list[str]:
    """Quick-run arguments of SST-2 with every validation/predict batch of the first EVAL_SAMPLES examples."""
    return [
        *glue_args("sst2", root),
        "--data.init_args.cache_dir", str(cache),
        "--data.init_args.limit_eval_samples", str(EVAL_SAMPLES),
        "--data.init_args.batch_size", str(BATCH_SIZE),
        "--trainer.limit_val_batches", "1.0",
        "--trainer.limit_predict_batches", "1.0",
    ]  # fmt: skip


def run_two_processes(subcommand: str, *args: str, root: Path, status: int = 0) -> tuple[Path, str]:
    """Run ``python -m neobert_tasks <subcommand> …`` with the two-process CPU preset last; check that it
    ends with exit status ``status``.

    Returns the run directory (``<root>/version_0``) and both ranks' output (rank 1 inherits rank 0's).
    """
    env = {key: value for key, value in os.environ.items() if key not in DISTRIBUTED_ENV}
    # DATASETS_VERBOSITY=info makes each rank log whether `map` wrote or read the tokenized cache.
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", DATASETS_VERBOSITY="info")
    command = [
        sys.executable, "-m", "neobert_tasks", subcommand, *args,
        "--config", str(DDP_CPU), "--trainer.default_root_dir", str(root),
    ]  # fmt: skip
    # A session of its own, so a timeout can end rank 0 and the rank 1 it started, and nothing else.
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"two-process {subcommand} did not finish in {RUN_TIMEOUT_S} s:\n{output[-5000:]}")
    ended = f"two-process {subcommand} ended with exit status {process.returncode}"
    assert process.returncode == status, f"{ended}:\n{output[-5000:]}"
    return root / "version_0", output


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ddp")


@pytest.fixture(scope="module")
def ddp_fit(workdir: Path) -> tuple[Path, str]:
    """A two-process ``fit`` on a fresh datasets cache: (run directory, output of both ranks)."""
    return run_two_processes("fit", *run_args(workdir, workdir / "datasets_cache"), root=workdir / "fit")


@pytest.fixture(scope="module")
def best_checkpoint(ddp_fit: tuple[Path, str]) -> str:
    run_dir, _ = ddp_fit
    checkpoint = pd.read_json(run_dir / "metrics.json", typ="series")["best_checkpoint"]
    assert checkpoint and Path(checkpoint).is_file()
    return checkpoint


@pytest.fixture(scope="module")
def one_process_predictions(workdir: Path, best_checkpoint: str) -> Path:
    """The SST-2.tsv of a one-process ``predict`` of the best checkpoint."""
    return one_process("predict", workdir, "predict_one", best_checkpoint) / "predictions" / "SST-2.tsv"


def validation_rows() -> pd.DataFrame:
    """The examples every run validates and predicts: the first EVAL_SAMPLES of the shared SST-2 copy."""
    rows = pd.read_parquet(shared_path("data", "glue", "sst2", "validation.parquet"))
    return rows.head(EVAL_SAMPLES).reset_index(drop=True)


def one_process(subcommand: str, workdir: Path, name: str, checkpoint: str) -> Path:
    """The one-process reference run of the same checkpoint, in-process; returns its run directory."""
    root = workdir / name
    args = run_args(root, workdir / "datasets_cache")
    return run_cli(subcommand, *args, "--ckpt_path", checkpoint, tmp_path=root)


def test_fit_trains_exports_and_tokenizes_once(ddp_fit):
    run_dir, output = ddp_fit
    summary = pd.read_json(run_dir / "metrics.json", typ="series")
    assert summary["monitor"] == "val/accuracy"
    assert set(summary["best_metrics"]) >= {"val/accuracy", "val/loss"}
    export = run_dir / "export"
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    assert (export / "tokenizer_config.json").is_file()
    # prepare_data (local rank 0 only) tokenizes the train and validation splits once; then setup on each
    # of the two ranks reads both from the cache instead of tokenizing again.
    assert output.count("Caching processed dataset at") == 2, output[-5000:]
    assert output.count("Loading cached processed dataset at") == 2 * 2, output[-5000:]


def test_token_budget_ranks_train_equal_batch_counts_within_budget(workdir):
    """With ``max_tokens``, the sampler deals whole batches to the ranks: as many to each (a rank with one
    batch more would hang the other's gradient all-reduce), none over the budget, the epoch covered."""
    record = workdir / "token_budget_batches"
    run_two_processes(
        "fit",
        *run_args(workdir, workdir / "datasets_cache"),
        "--data.init_args.max_tokens", "512",
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "1.0",
        "--trainer.limit_val_batches", "1",
        "--trainer.callbacks+=tests.cli.record_batches.RecordBatches",
        f"--trainer.callbacks.folder={record}",
        root=workdir / "token_budget",
    )  # fmt: skip
    ranks = [
        [json.loads(line) for line in (record / f"rank_{rank}.jsonl").read_text().splitlines()]
        for rank in range(2)
    ]
    assert len(ranks[0]) == len(ranks[1]) > 2
    for epoch in range(2):
        counts = [sum(1 for batch in rank if batch[0] == epoch) for rank in ranks]
        assert counts[0] == counts[1] > 0
        # The debug preset keeps 256 training examples; dealing evens the ranks out by repeating batches.
        assert sum(batch[3] for rank in ranks for batch in rank if batch[0] == epoch) >= 256
    assert all(rows * length <= 512 for rank in ranks for _, rows, length, _ in rank)


def test_validate_two_processes_equals_one(workdir, ddp_fit, best_checkpoint, one_process_predictions):
    two_dir, _ = run_two_processes(
        "validate",
        *run_args(workdir, workdir / "datasets_cache"),
        "--ckpt_path", best_checkpoint,
        root=workdir / "validate_ddp",
    )  # fmt: skip
    two = read_metrics_csv(two_dir)
    one = read_metrics_csv(one_process("validate", workdir, "validate_one", best_checkpoint))
    assert len(two["val/accuracy"]) == len(one["val/accuracy"]) == 1
    assert two["val/accuracy"] == one["val/accuracy"]
    assert two["val/loss"] == pytest.approx(one["val/loss"], rel=1e-5)
    # The fit's own end-of-training validation ran with two processes on the checkpoint's weights.
    fit_metrics = pd.read_json(ddp_fit[0] / "metrics.json", typ="series")["best_metrics"]
    assert fit_metrics["val/accuracy"] == pytest.approx(one["val/accuracy"][0], abs=1e-7)
    assert fit_metrics["val/loss"] == pytest.approx(one["val/loss"][0], rel=1e-5)
    # Every example counted exactly once: the accuracy is that of the one-process predictions.
    predicted = pd.read_csv(one_process_predictions, sep="\t")
    labels = validation_rows()
    assert predicted["index"].tolist() == labels["idx"].tolist()
    expected = float((predicted["prediction"] == labels["label"]).mean())
    assert two["val/accuracy"][0] == pytest.approx(expected, abs=1e-7)


def test_predict_two_processes_each_index_once_in_order(workdir, best_checkpoint, one_process_predictions):
    two_dir, _ = run_two_processes(
        "predict",
        *run_args(workdir, workdir / "datasets_cache"),
        "--ckpt_path", best_checkpoint,
        root=workdir / "predict_ddp",
    )  # fmt: skip
    two_file = two_dir / "predictions" / "SST-2.tsv"
    two = pd.read_csv(two_file, sep="\t")
    assert two["index"].tolist() == validation_rows()["idx"].tolist()
    assert two_file.read_text() == one_process_predictions.read_text()


# Rank 0 signals both ranks as optimizer step SIGNAL_STEP starts (of the debug preset's 8).
SIGNAL_STEP = 4


def signalled_fit(workdir: Path, name: str, signal_name: str, status: int) -> tuple[Path, str]:
    return run_two_processes(
        "fit",
        *run_args(workdir, workdir / "datasets_cache"),
        "--trainer.callbacks+=tests.cli.interrupt.SignalRanksAtStep",
        f"--trainer.callbacks.step={SIGNAL_STEP}",
        f"--trainer.callbacks.signal_name={signal_name}",
        root=workdir / name,
        status=status,
    )  # fmt: skip


def saved_step(run_dir: Path) -> int:
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return checkpoint["global_step"]


def test_sigterm_to_every_rank_stops_both_at_one_step_and_resumes_to_the_same_weights(workdir, ddp_fit):
    """Lightning 2.6 alone hangs here: its handler broadcasts wherever the signal lands on each rank."""
    run_dir, output = signalled_fit(workdir, "sigterm", "SIGTERM", 128 + signal.SIGTERM)
    # Both ranks finish the step that was running on rank 0 and save it, once; one closing line.
    assert saved_step(run_dir) == SIGNAL_STEP + 1
    assert output.count(f"Received SIGTERM at step {SIGNAL_STEP + 1}: saved") == 1
    assert output.count("neobert_tasks: stopped by SIGTERM") == 1
    assert "Traceback" not in output
    resumed, _ = run_two_processes(
        "fit", *run_args(workdir, workdir / "datasets_cache"), "--ckpt_path", "last", root=workdir / "sigterm"
    )
    assert resumed == run_dir
    expected = load_file(ddp_fit[0] / "export" / "model.safetensors")
    final = load_file(run_dir / "export" / "model.safetensors")
    assert final.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(final[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_ctrl_c_to_every_rank_saves_the_step_and_says_how_to_go_on(workdir):
    run_dir, output = signalled_fit(workdir, "ctrl_c", "SIGINT", 128 + signal.SIGINT)
    assert saved_step(run_dir) == SIGNAL_STEP + 1
    assert output.count("Ctrl-C: stopping after this step") == 1
    assert f"Stopped by Ctrl-C at step {SIGNAL_STEP + 1}" in output
    assert "Received SIGTERM" not in output


@pytest.mark.parametrize("subcommand", ["validate", "predict"])
def test_sigterm_to_every_rank_ends_an_evaluation_at_once(workdir, best_checkpoint, subcommand):
    """Nothing to save: each rank stops where it is, rank 0 passes the signal on, none hangs or crashes."""
    _, output = run_two_processes(
        subcommand,
        *run_args(workdir, workdir / "datasets_cache"),
        "--ckpt_path", best_checkpoint,
        "--trainer.callbacks+=tests.cli.interrupt.SignalRanksInEvaluation",
        root=workdir / f"{subcommand}_sigterm",
        status=128 + signal.SIGTERM,
    )  # fmt: skip
    assert output.count(f"neobert_tasks: {subcommand} stopped by SIGTERM; nothing was written") == 1
    assert "Traceback" not in output and "Received SIGTERM" not in output
