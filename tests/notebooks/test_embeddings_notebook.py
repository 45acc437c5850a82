"""``notebooks/05_embeddings.ipynb``: a tiny NeoBERT trained on NLI triplets, scored before and after on
STS-B dev and SciFact (with BM25), and its export searching SciFact through sentence-transformers.

Uses the shared NLI, STS-B and SciFact copies when present (the SST-2 sample otherwise, as the notebook
says; tests/notebooks/test_notebooks_without_shared_data.py runs that case).
"""

from __future__ import annotations

import math

import pytest

from tests.conftest import SHARED, shared_path
from tests.notebooks.execution import execute_notebook

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]  # executes a notebook in a Jupyter kernel

PROBE = """{
    "main_metric": main_metric,
    "scores": scores.reset_index().to_dict("records"),
    "best_step": best["step"],
    "hits": hits.to_dict("records"),
    "first_relevant": first_relevant,
    "documents": len(documents),
    "modules": [type(module).__name__ for module in encoder],
    "run_dir": str(run_dir),
}"""


def test_embeddings_notebook_trains_scores_and_searches(tmp_path, kernel_environment):
    shared_path("data", "nli_triplets")  # skips without the shared copy
    output_dir = tmp_path / "outputs"
    # One thread: the suite runs two test processes on two cores, and the kernel trains beside them.
    parameters = {"OUTPUT_DIR": output_dir, "SHARED": SHARED, "FAST": True, "TORCH_THREADS": 1}
    probe = execute_notebook("05_embeddings.ipynb", parameters, PROBE, tmp_path, kernel_environment).probe

    assert probe["main_metric"] == "val/stsb_dev/spearman"
    scores = {row["metric"]: row for row in probe["scores"]}
    assert set(scores) >= {"val/stsb_dev/spearman", "val/scifact/ndcg@10", "val/scifact/mrr@10"}
    assert math.isnan(scores["val/stsb_dev/spearman"]["BM25"])  # no lexical baseline for STS
    assert 0 < scores["val/scifact/ndcg@10"]["BM25"] <= 1
    # 30 steps of contrastive training already move the model's STS-B score off its random start.
    stsb = scores["val/stsb_dev/spearman"]
    assert stsb["after"] > stsb["before"]
    assert probe["best_step"] == 30
    assert probe["modules"] == ["Transformer", "Pooling", "Normalize"]
    hits = probe["hits"]
    assert len(hits) == 9 and [hit["rank"] for hit in hits[:3]] == [1, 2, 3]
    cosines = [hit["cosine"] for hit in hits[:3]]
    assert cosines == sorted(cosines, reverse=True) and all(-1 <= value <= 1 for value in cosines)
    assert probe["documents"] == 5183 and len(probe["first_relevant"]) == 3
    assert all(1 <= rank <= 5183 for rank in probe["first_relevant"])
    # A hit is relevant exactly when the first relevant document ranks at or above it.
    for number, first in enumerate(probe["first_relevant"]):
        flags = [hit["relevant"] for hit in hits[3 * number : 3 * number + 3]]
        assert flags.index(True) + 1 == first if first <= 3 else not any(flags)
    assert (output_dir / "embedding_curves.png").stat().st_size > 0
