"""``notebooks/01_quickstart.ipynb`` runs top to bottom: a tiny NeoBERT is built, fine-tuned through
``main(args=..., run=False)`` and ``trainer.fit``, exported, and labels new sentences.

It needs only the repository (the quickstart data and tokenizer ship with it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notebooks.execution import execute_notebook

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]  # executes a notebook in a Jupyter kernel

PROBE = """{
    "labels": predictions["label"].tolist(),
    "probabilities": predictions["probability"].tolist(),
    "run_dir": str(run_dir),
    "classes": list(classifier.config.id2label.values()),
    "hidden_shape": list(hidden.shape),
    "official_loaded": "official" in globals(),
}"""


def test_quickstart_notebook_trains_exports_and_predicts(tmp_path, kernel_environment):
    output_dir = tmp_path / "outputs"
    executed = execute_notebook(
        "01_quickstart.ipynb",
        {"OUTPUT_DIR": output_dir, "FAST": True},
        PROBE,
        tmp_path,
        kernel_environment,
    )
    probe = executed.probe
    assert probe["official_loaded"] is False  # the hub download stays behind its flag
    assert probe["hidden_shape"][0] == 2 and probe["hidden_shape"][2] == 64
    run_dir = Path(probe["run_dir"])
    assert run_dir.parent == output_dir / "quickstart"
    for name in ("metrics.json", "metrics.csv", "config.yaml", "export/model.safetensors"):
        assert (run_dir / name).is_file(), f"the run left no {name}"
    assert probe["classes"] == ["negative", "positive"]
    assert len(probe["labels"]) == 4 and set(probe["labels"]) <= {"negative", "positive"}
    assert all(0.5 <= probability <= 1.0 for probability in probe["probabilities"])
    assert (output_dir / "learning_curves.png").stat().st_size > 0
