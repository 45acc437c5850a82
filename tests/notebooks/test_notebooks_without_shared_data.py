"""The notebooks that read ``../shared/data`` on a clone without it: each says so, falls back to the
repository's SST-2 sample or to synthetic text, and still runs top to bottom with the same results.

Small settings keep these runs short; the notebooks' own tests cover their results on the real data.
"""

from __future__ import annotations

import pytest

from tests.notebooks.execution import execute_notebook, printed_text

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]  # executes a notebook in a Jupyter kernel


def absent_shared(tmp_path) -> dict:
    """Parameters of a quick run with ``SHARED`` pointing at a folder that does not exist."""
    return {"OUTPUT_DIR": tmp_path / "outputs", "SHARED": tmp_path / "no_shared", "FAST": True}


def test_glue_results_without_shared_data_runs_sst2_on_the_repository_sample(tmp_path, kernel_environment):
    probe = '{"tasks": table["task"].tolist()}'
    executed = execute_notebook(
        "02_glue_results.ipynb", absent_shared(tmp_path), probe, tmp_path, kernel_environment
    )
    assert "is absent: running SST-2 only, on the repository's sample" in printed_text(executed.notebook)
    assert executed.probe["tasks"] == ["sst2", "glue_average"]
    assert (tmp_path / "outputs" / "sample_glue" / "sst2" / "train.csv").is_file()


def test_long_context_without_shared_data_uses_synthetic_documents(tmp_path, kernel_environment):
    parameters = {**absent_shared(tmp_path), "MAX_LENGTHS": [128], "ATTENTION_LENGTHS": [128]}
    probe = '{"lengths": by_length["max_length"].tolist(), "documents": len(validation)}'
    executed = execute_notebook("03_long_context.ipynb", parameters, probe, tmp_path, kernel_environment)
    assert "is absent: using SYNTHETIC documents" in printed_text(executed.notebook)
    assert executed.probe == {"lengths": [128], "documents": 80}
    assert (tmp_path / "outputs" / "long_context.png").is_file()


def test_error_analysis_without_shared_data_uses_the_sample_and_synthetic_entities(
    tmp_path, kernel_environment
):
    parameters = {**absent_shared(tmp_path), "NER_EVAL_SENTENCES": 200}
    probe = '{"matrix": matrix.tolist(), "types": sorted(per_type.index[:4]), "sentences": len(gold_tags)}'
    executed = execute_notebook("04_error_analysis.ipynb", parameters, probe, tmp_path, kernel_environment)
    printed = printed_text(executed.notebook)
    assert "is absent: using the SST-2 sample of the repository" in printed
    assert "is absent: using SYNTHETIC sentences" in printed
    assert sum(map(sum, executed.probe["matrix"])) == 400  # data/quickstart/validation.csv
    assert executed.probe["types"] == ["LOC", "MISC", "ORG", "PER"]
    assert executed.probe["sentences"] == 200


def test_embeddings_without_shared_data_trains_on_sentiment_triplets(tmp_path, kernel_environment):
    probe = '{"main_metric": main_metric, "triplets": len(triplets), "queries": len(queries)}'
    parameters = {**absent_shared(tmp_path), "TORCH_THREADS": 1}
    executed = execute_notebook("05_embeddings.ipynb", parameters, probe, tmp_path, kernel_environment)
    printed = printed_text(executed.notebook)
    assert "is absent: using triplets and pairs built from the SST-2 sample" in printed
    assert executed.probe["main_metric"] == "val/sentiment_dev/spearman"
    assert executed.probe["triplets"] == 2500 and executed.probe["queries"] == 2
