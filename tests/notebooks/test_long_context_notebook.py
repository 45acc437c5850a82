"""``notebooks/03_long_context.ipynb``: long-document runs at several ``max_length`` values with their
scores and costs, and the attention backends measured against the length.

Uses the shared Hyperpartisan copy when present (synthetic documents otherwise, as the notebook says).
"""

from __future__ import annotations

import json
import math
import sys

import pytest

from tests.conftest import SHARED
from tests.notebooks.execution import execute_notebook

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]  # executes a notebook in a Jupyter kernel

MAX_LENGTHS = [128, 256]
ATTENTION_LENGTHS = [128, 256, 512]  # FAST measures the first three of ATTENTION_LENGTHS
PROBE = """{
    "by_length": by_length.to_dict("list"),
    "attention": attention.to_dict("records"),
    "coverage": coverage["documents read whole"].tolist(),
}"""


def test_long_context_notebook_measures_scores_and_costs_against_length(tmp_path, kernel_environment):
    output_dir = tmp_path / "outputs"
    parameters = {"OUTPUT_DIR": output_dir, "SHARED": SHARED, "MAX_LENGTHS": MAX_LENGTHS, "FAST": True}
    probe = execute_notebook("03_long_context.ipynb", parameters, PROBE, tmp_path, kernel_environment).probe

    by_length = probe["by_length"]
    assert by_length["max_length"] == MAX_LENGTHS
    assert all(0 <= value <= 1 for value in by_length["accuracy"] + by_length["f1"])
    assert all(seconds > 0 for seconds in by_length["seconds_per_step"])
    if sys.platform.startswith("linux"):  # a fit's own memory (tens of MiB), not a second, empty fit's few
        assert all(peak > 20 for peak in by_length["peak_mib"])
    # Longer inputs read at least as many documents whole.
    assert probe["coverage"] == sorted(probe["coverage"])
    for name in ("long_context.png", "long_context.csv", "attention_backends.png", "attention_cost.json"):
        assert (output_dir / name).stat().st_size > 0, f"no {name}"

    rows = {(row["backend"], row["length"]): row for row in probe["attention"]}
    assert set(rows) == {
        (backend, length) for backend in ("eager", "sdpa", "sdpa_varlen") for length in ATTENTION_LENGTHS
    }
    assert all(row["tokens_per_s"] > 0 for row in rows.values())
    written = json.loads((output_dir / "attention_cost.json").read_text())
    assert [(row["backend"], row["length"]) for row in written] == list(rows)
    assert [row["tokens_per_s"] for row in written] == pytest.approx(
        [row["tokens_per_s"] for row in rows.values()]
    )
    if sys.platform.startswith("linux"):
        assert all(row["peak_mib"] > 0 for row in rows.values())
        # eager holds every head's length × length scores, which SDPA never writes out whole.
        assert rows["eager", 512]["peak_mib"] > rows["sdpa", 512]["peak_mib"]
    else:
        assert all(math.isnan(row["peak_mib"]) for row in rows.values())
