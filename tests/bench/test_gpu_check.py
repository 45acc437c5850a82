"""``bench.gpu_check`` end to end on the CPU at a small size: a GPU session runs it once, unattended, so a
script error found there costs the session's device time. The figures mean nothing here; the agreement
with eager, the table, the JSON written after each backend and the exit status are checked."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench import gpu_check

pytestmark = pytest.mark.slow  # a one-layer model timed at a few shapes, about 15 s


def test_gpu_check_runs_on_the_cpu_and_writes_every_measurement(tmp_path, capsys):
    torch.set_num_threads(1)
    written = tmp_path / "gpu_check.json"
    arguments = ["--device", "cpu", "--layers", "1", "--lengths", "64", "--tokens-per-batch", "128"]
    arguments += ["--steps", "1", "--backends", "sdpa", "sdpa_varlen", "torch_varlen", "--json", str(written)]
    assert gpu_check.main(arguments) == 0
    printed = capsys.readouterr().out
    assert "torch_varlen left out: " in printed and printed.rstrip().endswith("OK")
    result = json.loads(written.read_text())
    agreement = result["agreement"]
    for backend in ("sdpa", "sdpa_varlen"):
        for batch in ("padded", "packed"):
            assert agreement[backend][batch] <= 0.1 * agreement["scale"][batch], (backend, batch)
    rows = {(row["backend"], row["rows"]): row for row in result["rows"]}
    assert set(rows) == {(backend, kind) for backend in ("sdpa", "sdpa_varlen") for kind in ("full", "mixed")}
    for row in rows.values():
        assert row["length"] == 64 and row["train_tokens_per_second"] > 0 and row["forward_mfu"] > 0
        assert math.isnan(row["peak_memory_gib"])  # no GPU allocator to ask on the CPU
    assert result["bf16_matmul_peak"] > 0


def test_agreement_batches_keep_the_gpu_checks_shapes_at_4096():
    batches = gpu_check.agreement_batches(4096, "cpu")
    assert batches["padded"]["attention_mask"].sum(dim=1).tolist() == [512, 300, 77, 4096, 1000]
    positions = batches["packed"]["position_ids"]
    starts = [(row == 0).nonzero().flatten().tolist() for row in positions]
    assert starts == [[0, 1000, 1700, 2000], [0]] and positions.shape == (2, 2048)
