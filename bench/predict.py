"""Prediction throughput on GLUE validation data: neobert_tasks ``predict`` against plain transformers.

    python -m bench.predict                  # SST-2 and MNLI, small (6 × 768), fp32
    python -m bench.predict --shapes base --precisions bf16 --samples 512

Routes, over the same randomly initialised ``NeoBERTForSequenceClassification`` and the first
``--samples`` examples of the validation split, taking turns ``--repeats`` times (best time kept):

* ``neobert_tasks``: ``predict`` through the CLI's Python entry point (datamodule, task module,
  prediction writer: the GLUE submission file is written); its batches run longest first
  (``LengthSortedEvalSampler``) and the task writes rows back in dataset order by ``idx``;
* ``neobert_tasks_dataset_order``: the same with the prediction batches in dataset order (a bench-only
  replacement of the datamodule's loader), as before the datamodule sorted them: what sorting is worth;
* ``hf_loop``: a plain loop: ``DataLoader`` + ``DataCollatorWithPadding``, ``inference_mode``, argmax
  (tokenization done beforehand, not timed);
* ``hf_pipeline``: ``pipeline("text-classification")`` on the raw texts (tokenizes as it goes);
* ``trainer_predict``: ``Trainer.predict`` with ``DataCollatorWithPadding``, as run_glue.py predicts.

Reported: real (non-padding) tokens per second, the padding fraction of the batches the model saw,
and the speed relative to ``neobert_tasks``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import datasets
import torch
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, pipeline

from bench.common import DTYPES, SHAPES, print_table, shape_label, write_json
from bench.fine_tuning import BATCH_SIZES, initial_state
from bench.routes import LIGHTNING_PRECISION, REPOSITORY, load_tokenizer
from neobert_tasks.cli import main as neobert_tasks_main
from neobert_tasks.data.glue import GLUE_TASKS
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification


class TokenCounter:
    """Counts the real and padded tokens of every forward pass of a model."""

    def __init__(self, model: torch.nn.Module):
        self.real = self.slots = 0
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        mask = kwargs.get("attention_mask")
        if mask is not None:
            self.real += int(mask.sum())
            self.slots += mask.numel()


def validation_sample(task: str, data: Path, samples: int, folder: Path) -> Path:
    split = GLUE_TASKS[task].validation_splits[0]
    raw = datasets.load_dataset("parquet", data_files=str(data / task / f"{split}.parquet"), split="train")
    folder.mkdir(parents=True, exist_ok=True)
    raw.select(range(min(samples, len(raw)))).to_parquet(folder / f"{split}.parquet")
    return folder / f"{split}.parquet"


def neobert_tasks_route(task, shape, precision, data_file: Path, arguments, state, dataset_order: bool):
    args = [
        "--config", str(REPOSITORY / "configs" / "glue" / f"{task}.yaml"),
        "--config", str(REPOSITORY / "configs" / "presets" / "cpu.yaml"),
        "--trainer.precision", LIGHTNING_PRECISION[precision],
        "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(data_file.parent.parent / "runs"),
        "--model.init_args.pretrained", "null",
        "--model.init_args.model_config", str({**SHAPES[shape], "max_length": 512}).replace("'", '"'),
        "--data.init_args.tokenizer", arguments.tokenizer,
        "--data.init_args.data_dir", str(data_file.parent),
        "--data.init_args.max_length", str(arguments.max_length),
        "--data.init_args.eval_batch_size", str(arguments.batch_size),
        "--data.init_args.cache_dir", str(data_file.parent.parent / "cache"),
    ]  # fmt: skip
    with mock.patch.object(sys, "argv", sys.argv[:1]):
        cli = neobert_tasks_main(args=args, run=False)
    cli.model.model.load_state_dict(state)
    counter = TokenCounter(cli.model.model)
    if dataset_order:
        _unsort_prediction_batches(cli.datamodule)
    return counter, lambda: cli.trainer.predict(
        cli.model, datamodule=cli.datamodule, return_predictions=False
    )


def _unsort_prediction_batches(datamodule) -> None:
    """Replace the datamodule's prediction loader by one that takes the examples in dataset order."""
    original = datamodule.predict_dataloader

    def dataset_order_loader():
        loader = original()
        return torch.utils.data.DataLoader(
            loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn
        )

    datamodule.predict_dataloader = dataset_order_loader


def hf_routes(task, shape, precision, data_file: Path, arguments, state) -> dict:
    """The plain-transformers routes: (token counter, function to time) for each."""
    columns = GLUE_TASKS[task].text_columns
    raw = datasets.load_dataset("parquet", data_files=str(data_file), split="train")
    tokenizer = load_tokenizer(arguments.tokenizer)
    encoded = raw.map(
        lambda rows: tokenizer(*[rows[c] for c in columns], truncation=True, max_length=arguments.max_length),
        batched=True,
        remove_columns=raw.column_names,
    )
    encoded = encoded.select_columns(["input_ids", "attention_mask"])
    collator = DataCollatorWithPadding(tokenizer)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    routes = {}
    for name in ("hf_loop", "hf_pipeline", "trainer_predict"):
        model = NeoBERTForSequenceClassification(
            NeoBERTConfig(**SHAPES[shape], num_labels=GLUE_TASKS[task].num_labels, max_length=512)
        )
        model.load_state_dict(state)
        model.eval()
        counter = TokenCounter(model)
        if name == "hf_loop":
            routes[name] = (counter, _loop(model, encoded, collator, arguments.batch_size, autocast))
        elif name == "hf_pipeline":
            classifier = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
            texts = [
                {"text": row[columns[0]], "text_pair": row[columns[1]]}
                if len(columns) > 1
                else row[columns[0]]
                for row in raw
            ]
            routes[name] = (counter, _pipeline_call(classifier, texts, arguments, autocast))
        else:
            trainer_arguments = TrainingArguments(
                output_dir=str(data_file.parent.parent / name), bf16=precision == "bf16", use_cpu=True,
                per_device_eval_batch_size=arguments.batch_size, report_to="none", disable_tqdm=True,
            )  # fmt: skip
            trainer = Trainer(
                model=model, args=trainer_arguments, data_collator=collator, processing_class=tokenizer
            )
            routes[name] = (counter, lambda trainer=trainer: trainer.predict(encoded))
    return routes


def _loop(model, encoded, collator, batch_size, autocast):
    def run():
        loader = torch.utils.data.DataLoader(encoded, batch_size=batch_size, collate_fn=collator)
        predictions = []
        with torch.inference_mode(), autocast:
            for batch in loader:
                predictions.append(model(**batch).logits.argmax(-1))
        return torch.cat(predictions)

    return run


def _pipeline_call(classifier, texts, arguments, autocast):
    def run():
        with torch.inference_mode(), autocast:
            return classifier(
                texts, batch_size=arguments.batch_size, truncation=True, max_length=arguments.max_length
            )

    return run


def run_configuration(task, shape, precision, arguments, work: Path) -> list[dict]:
    data_file = validation_sample(
        task, arguments.data, arguments.samples, work / f"{task}-{shape}-{precision}" / "data"
    )
    state = initial_state(shape, GLUE_TASKS[task].num_labels, arguments.seed)
    routes = {
        name: neobert_tasks_route(
            task, shape, precision, data_file, arguments, state, dataset_order=name.endswith("dataset_order")
        )
        for name in ("neobert_tasks", "neobert_tasks_dataset_order")
    }
    routes.update(hf_routes(task, shape, precision, data_file, arguments, state))
    routes = {name: value for name, value in routes.items() if name in arguments.routes}
    best = dict.fromkeys(routes, float("inf"))
    counts = {}
    for _ in range(arguments.repeats):
        for name, (counter, function) in routes.items():
            counter.real = counter.slots = 0
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
            counts[name] = (counter.real, counter.slots)
    rows = []
    for name in routes:
        real, slots = counts[name]
        rows.append(
            {"task": task, "shape": shape_label(shape), "precision": precision, "route": name,
             "seconds": best[name], "real_tokens_per_second": real / best[name],
             "padding_fraction": 1 - real / slots if slots else 0.0}
        )  # fmt: skip
    reference = next((row for row in rows if row["route"] == "neobert_tasks"), rows[0])
    for row in rows:
        row["speed_vs_neobert_tasks"] = row["real_tokens_per_second"] / reference["real_tokens_per_second"]
    return rows


COLUMNS = [
    ("task", "task", ""),
    ("shape", "shape", ""),
    ("precision", "prec", ""),
    ("route", "route", ""),
    ("seconds", "seconds", ".2f"),
    ("real_tokens_per_second", "real tok/s", ",.0f"),
    ("padding_fraction", "padding", ".1%"),
    ("speed_vs_neobert_tasks", "× ours", ".2f"),
]
ROUTE_NAMES = ["neobert_tasks", "neobert_tasks_dataset_order", "hf_loop", "hf_pipeline", "trainer_predict"]


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mnli"], choices=sorted(BATCH_SIZES))
    parser.add_argument("--shapes", nargs="+", default=["small"], choices=sorted(SHAPES))
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    parser.add_argument("--routes", nargs="+", default=ROUTE_NAMES, choices=ROUTE_NAMES)
    parser.add_argument("--samples", type=int, default=512, help="validation examples (SST-2 has 872)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2, help="turns per route (best time kept)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/glue"))
    parser.add_argument("--tokenizer", default="../shared/tokenizers/bert-base-uncased")
    parser.add_argument("--json", default="runs/bench/predict.json")
    return parser.parse_args(argv)


def main() -> None:
    arguments = parse_arguments()
    datasets.disable_progress_bars()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="neobert-predict-") as work:
        for task in arguments.tasks:
            for shape in arguments.shapes:
                for precision in arguments.precisions:
                    rows.extend(run_configuration(task, shape, precision, arguments, Path(work)))
                    print_table(rows[-len(arguments.routes) :], COLUMNS)
    print("\nall configurations")
    print_table(rows, COLUMNS)
    settings = {
        key: (str(value) if isinstance(value, Path) else value) for key, value in vars(arguments).items()
    }
    write_json(arguments.json, {"settings": settings, "rows": rows})


if __name__ == "__main__":
    main()
