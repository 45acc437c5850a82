"""Does contrastive training teach a from-scratch model to embed? Scores before and after, beside BM25.

The tiny preset's model (2 × 64, random weights) is scored on the validation sets of an embedding config,
then trained with that config for ``--max-steps`` on the CPU and scored again (the best validation, as
the exported model). BM25 is scored by the same evaluation code on the retrieval sets, for scale. The
untrained and the trained model start from the same seed, so "before" is the trained run's own start.

    python -m bench.embedding_learning --config nli --max-steps 400
    python -m bench.embedding_learning --config squad_retrieval --max-steps 400

Each run prints a table of the main metrics and writes ``bench/results/embedding_learning_<config>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bench.common import print_table, write_json
from neobert_tasks.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
# Per config, the validation sets scored: STS-B dev and one retrieval set (what the issue asks for).
EVAL_SETS = {
    "nli": ["data/glue/stsb/validation.parquet", "data/retrieval/scifact"],
    "squad_retrieval": ["data/squad/validation.parquet", "data/glue/stsb/validation.parquet"],
}
METRICS = ("stsb_dev/spearman", "scifact/ndcg@10", "squad_dev/ndcg@10", "scifact/mrr@10", "squad_dev/mrr@10")


def command_args(config: str, root: Path, max_steps: int, validate_every: int) -> list[str]:
    """The config with the tiny and CPU presets, the shared tokenizer and data, and the run's length."""
    data_dir = SHARED / "data" / ("squad" if config == "squad_retrieval" else "nli_triplets")
    return [
        "--config", str(REPO / "configs" / "embeddings" / f"{config}.yaml"),
        "--config", str(REPO / "configs" / "presets" / "tiny.yaml"),
        "--config", str(REPO / "configs" / "presets" / "cpu.yaml"),
        "--data.init_args.tokenizer", str(SHARED / "tokenizers" / "bert-base-uncased"),
        "--data.init_args.data_dir", str(data_dir),
        "--data.init_args.eval_sets", json.dumps([str(SHARED / path) for path in EVAL_SETS[config]]),
        "--trainer.max_steps", str(max_steps),
        "--trainer.val_check_interval", str(validate_every),
        "--trainer.check_val_every_n_epoch", "null",
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(root),
    ]  # fmt: skip


def scores(metrics: dict) -> dict[str, float]:
    """``{set/metric: value}`` of the logged ``val/...`` metrics, BM25's under ``bm25:set/metric``."""
    found = {}
    for name, value in metrics.items():
        if not name.startswith("val/") or name.endswith("/loss"):
            continue
        set_name, *rest = name.removeprefix("val/").split("/")
        key = f"bm25:{set_name}/{rest[-1]}" if rest[0] == "bm25" else f"{set_name}/{rest[-1]}"
        found[key] = float(value)
    return found


def run(config: str, max_steps: int, validate_every: int, root: Path) -> dict:
    before = main(args=["validate", *command_args(config, root / "before", max_steps, validate_every)])
    started = time.perf_counter()
    after = main(args=["fit", *command_args(config, root / "after", max_steps, validate_every)])
    seconds = time.perf_counter() - started
    best = dict(after.trainer.checkpoint_callback.best_metrics)
    return {
        "config": config,
        "max_steps": max_steps,
        "fit_seconds": round(seconds, 1),
        "best_step": best.get("step"),
        "before": scores(before.trainer.callback_metrics),
        "after": scores(best),
    }


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--config", choices=sorted(EVAL_SETS), default="nli")
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--validate-every", type=int, default=100)
    parser.add_argument("--root", default=str(REPO / "runs" / "bench" / "embedding_learning"))
    parser.add_argument("--json", help="default: bench/results/embedding_learning_<config>.json")
    return parser.parse_args(argv)


def print_result(result: dict) -> None:
    """The main metrics before and after training, and BM25's, as a table."""
    rows = [
        {
            "metric": metric,
            "before": result["before"].get(metric),
            "after": result["after"].get(metric),
            "bm25": result["after"].get(f"bm25:{metric}"),
        }
        for metric in METRICS
        if metric in result["after"]
    ]
    steps, seconds = result["max_steps"], result["fit_seconds"]
    print(f"{result['config']}: {steps} steps in {seconds} s (fit, validation included)")
    print_table(rows, [("metric", "metric", ""), ("before", "before", ".4f"), ("after", "after", ".4f"),
                       ("bm25", "BM25", ".4f")])  # fmt: skip


def main_cli() -> None:
    options = parse_arguments()
    root = Path(options.root) / options.config
    # LightningCLI reads sys.argv when given args too, and warns: only the args below count.
    sys.argv = sys.argv[:1]
    result = run(options.config, options.max_steps, options.validate_every, root)
    print_result(result)
    default_json = REPO / "bench" / "results" / f"embedding_learning_{options.config}.json"
    write_json(options.json or str(default_json), result)


if __name__ == "__main__":
    main_cli()
