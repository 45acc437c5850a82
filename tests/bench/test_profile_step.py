"""``bench.profile_step``'s breakdown: compiling inside the profiled steps is set apart from the step."""

from __future__ import annotations

import time

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from bench.profile_step import COMPILING, breakdown

pytestmark = pytest.mark.slow  # torch.compile writes and loads a C++ kernel in a process of its own


def test_compiling_in_the_profiled_steps_is_left_out_of_the_step_and_its_shares():
    weight = torch.randn(256, 256)
    compiled = torch.compile(lambda x: torch.relu(x) * 2, dynamic=False)
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        for step in range(2):
            x = torch.randn(64, 256) @ weight
            if step == 1:
                compiled(x)  # a new variant compiled in the second step, as a batch of a new shape does
        seconds = time.perf_counter() - start
    rows, _ = breakdown(profiler, seconds, steps=2)
    by_kind = {row["kind"]: row for row in rows}
    wall = seconds * 1e3 / 2
    assert by_kind[COMPILING]["ms_per_step"] > 0.5 * wall  # compiling takes far longer than a 64 × 256 matmul
    step = by_kind["step (wall, less compiling)"]["ms_per_step"]
    assert step == wall - by_kind[COMPILING]["ms_per_step"]
    assert by_kind["matmul"]["share"] == by_kind["matmul"]["ms_per_step"] / step
    assert "(dynamo_timed)" not in " ".join(by_kind)
