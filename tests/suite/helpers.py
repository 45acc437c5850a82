"""Helpers shared by the suite tests: quick suite arguments, in-process runs, and a head re-init probe.

Runs use the tiny randomly initialised model with the debug and CPU presets, the shared bert-base-uncased
tokenizer and GLUE copy (tests skip with a reason when ``../shared`` is absent), a handful of rows of
at most 64 tokens, and the in-process launcher, so that each run takes a few seconds on two CPU cores.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from neobert_tasks.suite.cli import main
from tests.cli.helpers import CPU, DEBUG, TINY
from tests.conftest import REPO_ROOT, shared_path

TINY_GRID = REPO_ROOT / "configs" / "suite" / "tiny_grid.yaml"
QUICK_OVERRIDES = (
    "trainer.max_epochs=1",  # after a command's own overrides (docs/glue.md's max_epochs=3), so it wins
    "data.init_args.limit_train_samples=8",
    "data.init_args.limit_eval_samples=8",
    "data.init_args.max_length=64",
    "trainer.limit_val_batches=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
)


def quick_args(tmp_path: Path, launcher: str = "in_process") -> list[str]:
    """Suite options for quick CPU runs on the shared data, with the datasets cache under ``tmp_path``."""
    arguments = ["--config", str(TINY), "--config", str(DEBUG), "--config", str(CPU)]
    arguments += ["--data_dir", str(shared_path("data", "glue")), "--launcher", launcher]
    overrides = [
        f"data.init_args.tokenizer={shared_path('tokenizers', 'bert-base-uncased')}",
        f"data.init_args.cache_dir={tmp_path / 'datasets_cache'}",
        *QUICK_OVERRIDES,
    ]
    return arguments + [part for override in overrides for part in ("--override", override)]


def with_quick_args(argv: list[str], tmp_path: Path, launcher: str = "in_process") -> list[str]:
    """``argv`` with `quick_args` added before any ``--`` (after it, they would go to the runs)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    return [*argv[:cut], *quick_args(tmp_path, launcher), *argv[cut:]]


def run_suite(argv: list[str]) -> tuple[int, str]:
    """``python -m neobert_tasks.suite <argv>`` in-process: its exit status and what it printed."""
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        status = main([str(argument) for argument in argv])
    return status, output.getvalue()


def best_metrics(run_dir: Path) -> dict[str, float]:
    """The ``best_metrics`` a run wrote to its ``metrics.json``."""
    return json.loads((run_dir / "metrics.json").read_text())["best_metrics"]


def head_reinit_supported(tmp_path: Path) -> bool:
    """Whether a classification task can start from a checkpoint with a different number of labels.

    MNLI (3 labels) → RTE (2) needs it; until the model loading re-initialises a head of another size,
    the MNLI-init test is skipped with this reason rather than failing on an unrelated missing feature.
    """
    from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification
    from neobert_tasks.tasks import SequenceClassificationTask
    from tests.conftest import tiny_config_kwargs

    NeoBERTForSequenceClassification(NeoBERTConfig(**tiny_config_kwargs(num_labels=3))).save_pretrained(
        tmp_path
    )
    try:
        SequenceClassificationTask(
            num_labels=2, problem_type="single_label_classification", pretrained=str(tmp_path)
        )
    except RuntimeError as error:  # transformers' refusal; anything else is a failure of its own
        if "ignore_mismatched_sizes" in str(error):
            return False
        raise
    return True
