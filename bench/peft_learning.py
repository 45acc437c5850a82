"""Does LoRA learn as well as full fine-tuning? One epoch of SST-2 each, from the same MLM-pretrained model.

``python -m bench.peft_learning`` first pretrains a tiny NeoBERT (4 × 128) with the MLM task on local text:
SQuAD's training paragraphs (Wikipedia) and SST-2's training sentences without their labels (its
validation sentences are never seen). A random backbone would teach LoRA nothing: its adapters sit on
features that mean nothing. From that model's export it then fine-tunes SST-2 for one epoch (the whole
training set, batch 32, 2,105 steps) with full fine-tuning and with LoRA (``configs/presets/lora.yaml``,
r = 8 on every projection, the head in full), and reports validation accuracy, the time of each ``fit``
and the trainable parameters. ``--lora-learning-rates`` tries LoRA at several rates (adapters usually want
a higher one than full fine-tuning); ``--include-random`` adds LoRA over an unpretrained backbone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import datasets

from bench.common import SHAPES, write_json
from neobert_tasks.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOKENIZER = SHARED / "tokenizers/bert-base-uncased"
TINY = json.dumps({**SHAPES["tiny"], "max_length": 128})


def write_mlm_corpus(folder: Path) -> None:
    """``train.parquet``: SQuAD training paragraphs and SST-2 training sentences (a ``text`` column);
    ``validation.parquet``: SQuAD validation paragraphs."""
    squad = datasets.load_dataset("parquet", data_dir=str(SHARED / "data/squad"))
    sst2 = datasets.load_dataset("parquet", data_files=str(SHARED / "data/glue/sst2/train.parquet"))["train"]
    train = sorted(set(squad["train"]["context"])) + list(sst2["sentence"])
    validation = sorted(set(squad["validation"]["context"]))[:500]
    folder.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict({"text": train}).to_parquet(folder / "train.parquet")
    datasets.Dataset.from_dict({"text": validation}).to_parquet(folder / "validation.parquet")


def common_args(root: Path) -> list[str]:
    return [
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root / "runs"),
        "--data.init_args.tokenizer", str(TOKENIZER), "--data.init_args.cache_dir", str(root / "cache"),
        "--model.init_args.compile", "false",
    ]  # fmt: skip


def pretrain(root: Path, steps: int) -> tuple[Path, float]:
    """MLM-pretrain the tiny model on the local corpus; its export folder and the fit's seconds."""
    corpus = root / "corpus"
    write_mlm_corpus(corpus)
    args = [
        "fit", "--config", str(REPO / "configs/mlm.yaml"), *common_args(root / "mlm"),
        "--data.init_args.data_dir", str(corpus), "--data.init_args.dataset", "null",
        "--data.init_args.dataset_config", "null", "--data.init_args.max_length", "128",
        "--model.init_args.pretrained", "null", "--model.init_args.model_config", TINY,
        "--model.init_args.learning_rate", "1e-3", "--model.init_args.warmup_fraction", "0.05",
        "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
        "--trainer.val_check_interval", str(steps), "--trainer.check_val_every_n_epoch", "null",
    ]  # fmt: skip
    started = time.perf_counter()
    cli = main(args=args)
    return Path(cli.trainer.log_dir) / "export", time.perf_counter() - started


def fine_tune(root: Path, pretrained: Path | None, lora: bool, learning_rate: float) -> dict:
    """One epoch of SST-2 from ``pretrained`` (None: a random tiny backbone); accuracy, time, parameters."""
    args = [
        "fit", "--config", str(REPO / "configs/glue/sst2.yaml"), *common_args(root),
        "--data.init_args.data_dir", str(SHARED / "data/glue/sst2"),
        "--data.init_args.max_length", "128", "--trainer.max_epochs", "1",
        "--model.init_args.learning_rate", str(learning_rate), "--model.init_args.warmup_fraction", "0.1",
    ]  # fmt: skip
    if pretrained is None:
        args += ["--model.init_args.pretrained", "null", "--model.init_args.model_config", TINY]
    else:
        args += ["--model.init_args.pretrained", str(pretrained)]
    if lora:
        args += ["--config", str(REPO / "configs/presets/lora.yaml"), "--model.init_args.learning_rate",
                 str(learning_rate)]  # fmt: skip
    started = time.perf_counter()
    cli = main(args=args)
    seconds = time.perf_counter() - started
    summary = json.loads((Path(cli.trainer.log_dir) / "metrics.json").read_text())
    parameters = list(cli.model.parameters())
    return {
        "route": ("LoRA r=8" if lora else "full fine-tuning") + ("" if pretrained else ", random backbone"),
        "learning_rate": learning_rate,
        "val_accuracy": summary["best_metrics"]["val/accuracy"],
        "fit_seconds": seconds,
        "steps": cli.trainer.global_step,
        "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
        "total_parameters": sum(p.numel() for p in parameters),
    }


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peft_learning", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--mlm-steps", type=int, default=3000, help="MLM pretraining steps (batch 32 × 128)")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="full fine-tuning's rate")
    parser.add_argument("--lora-learning-rates", type=float, nargs="+", default=[1e-3, 2e-3])
    parser.add_argument("--include-random", action="store_true", help="also LoRA over a random backbone")
    parser.add_argument("--output", default=str(REPO / "bench/results/peft_learning.json"))
    return parser.parse_args(argv)


def main_cli(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    sys.argv = sys.argv[:1]  # LightningCLI reads its args alone, not this script's options
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        export, mlm_seconds = pretrain(root, arguments.mlm_steps)
        rows = [fine_tune(root / "full", export, False, arguments.learning_rate)]
        for rate in arguments.lora_learning_rates:
            rows.append(fine_tune(root / f"lora_{rate}", export, True, rate))
        if arguments.include_random:
            rows.append(fine_tune(root / "lora_random", None, True, max(arguments.lora_learning_rates)))
    print(f"MLM pretraining: {arguments.mlm_steps} steps in {mlm_seconds:.0f} s")
    print("| route | learning rate | trainable parameters | SST-2 validation accuracy | fit seconds |")
    print("|---|---|---|---|---|")
    for row in rows:
        share = 100 * row["trainable_parameters"] / row["total_parameters"]
        print(f"| {row['route']} | {row['learning_rate']:g} | {row['trainable_parameters']:,} ({share:.1f}%) "
              f"| {row['val_accuracy']:.4f} | {row['fit_seconds']:.0f} |")  # fmt: skip
    write_json(arguments.output, {"arguments": vars(arguments), "mlm_seconds": mlm_seconds, "rows": rows})


if __name__ == "__main__":
    main_cli()
