"""``notebooks/04_error_analysis.ipynb``: the confusion matrix of a GLUE run over its whole validation
split, and a NER run's per-type scores and mistakes by kind.

Uses the shared SST-2 and CoNLL-2003 copies when present; otherwise the repository's SST-2 sample and
synthetic NER sentences, which the notebook announces.
"""

from __future__ import annotations

import pytest

from neobert_tasks.analysis import ERROR_KINDS
from tests.conftest import SHARED
from tests.notebooks.execution import execute_notebook

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]  # executes a notebook in a Jupyter kernel

NER_EVAL_SENTENCES = 300
PROBE = """{
    "matrix": matrix.tolist(),
    "validation_rows": len(validation),
    "label_names": label_names,
    "mistakes_shown": int((~scored["correct"]).sum()),
    "per_type": per_type[["f1-score", "f1 logged at the best epoch"]].to_dict("index"),
    "gold_sentences": len(gold_tags),
    "kinds": sorted(set(errors["kind"])),
    "kind_table": kinds.to_dict("index"),
}"""


def test_error_analysis_notebook_counts_every_validation_row_and_every_entity_type(
    tmp_path, kernel_environment
):
    output_dir = tmp_path / "outputs"
    parameters = {
        "OUTPUT_DIR": output_dir,
        "SHARED": SHARED,
        "NER_EVAL_SENTENCES": NER_EVAL_SENTENCES,
        "FAST": True,
    }
    probe = execute_notebook("04_error_analysis.ipynb", parameters, PROBE, tmp_path, kernel_environment).probe

    # Classification: every validation row is in the matrix exactly once.
    shared_sst2 = (SHARED / "data" / "glue" / "sst2").is_dir()
    assert probe["validation_rows"] == (872 if shared_sst2 else 400)
    assert sum(map(sum, probe["matrix"])) == probe["validation_rows"]
    assert probe["label_names"] == ["negative", "positive"]
    off_diagonal = probe["matrix"][0][1] + probe["matrix"][1][0]
    assert probe["mistakes_shown"] == off_diagonal

    # NER: seqeval's per-type F1 for the four CoNLL types, equal to what the run logged.
    assert probe["gold_sentences"] == NER_EVAL_SENTENCES
    per_type = probe["per_type"]
    for entity_type in ("PER", "LOC", "ORG", "MISC"):
        f1 = per_type[entity_type]["f1-score"]
        assert 0 <= f1 <= 1
        assert f1 == pytest.approx(per_type[entity_type]["f1 logged at the best epoch"], abs=1e-6)
    assert set(probe["kinds"]) <= set(ERROR_KINDS) and probe["kinds"]
    assert list(probe["kind_table"]) == list(ERROR_KINDS)
    for name in ("glue_confusion_matrix.png", "ner_error_kinds.png", "ner_type_confusions.png"):
        assert (output_dir / name).stat().st_size > 0, f"no {name}"
