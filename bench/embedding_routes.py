"""The routes of ``bench.embedding_speed``: neobert_tasks ``fit`` and sentence-transformers' trainer over
the same initial model and NLI triplets, each with a step clock that counts the real tokens the model
sees (how each route's steps are set up, timed and compared is in ``bench/embedding_speed.py``)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import datasets
import torch
from lightning.pytorch.callbacks import EarlyStopping

from bench.common import SHAPES
from bench.interleave import StepClock
from bench.routes import _LightningClock, _TrainerClock
from neobert_tasks.cli import main as neobert_tasks_main

REPOSITORY = Path(__file__).resolve().parents[1]
CONFIGS = [
    REPOSITORY / "configs" / "embeddings" / "nli.yaml",
    REPOSITORY / "configs" / "presets" / "tiny.yaml",
    REPOSITORY / "configs" / "presets" / "cpu.yaml",
]
ROLES = ("anchor", "positive", "negative")


@dataclass
class EmbeddingClock(StepClock):
    """A `StepClock` that also reads the attention mask of a features dict passed positionally (how
    sentence-transformers calls its model), and times a route's setup before its first step."""

    began: float = 0.0
    setup_seconds: float = 0.0

    def _count_tokens(self, module, args, kwargs) -> None:
        if kwargs.get("attention_mask") is None and args and isinstance(args[0], dict):
            kwargs = args[0]
        super()._count_tokens(module, args, kwargs)

    def begin(self) -> None:
        self.began = time.perf_counter()

    def start(self) -> None:
        super().start()
        self.setup_seconds = self._last - self.began

    def summary(self) -> dict[str, float]:
        summary = super().summary()
        median = statistics.median(self.seconds) if self.seconds else 0.0
        tokens_per_step = summary["real_tokens"] / max(summary["timed_steps"], 1)
        return {
            **summary,
            "median_seconds_per_step": median,
            "real_tokens_per_step": tokens_per_step,
            "setup_seconds": self.setup_seconds,
        }


# ------------------------------------------------------------------------------------------------------
# neobert_tasks: fit as the command line builds it.


def fit_arguments(
    arguments: argparse.Namespace,
    work: Path,
    batch_size: int,
    total_steps: int,
    group_by_length: bool = True,
    chunk_size: int | None = None,
) -> list[str]:
    """The CLI arguments of one neobert_tasks route: training only, no validation, checkpoint or export."""
    model_config = []
    if arguments.shape != "preset":
        config = {**SHAPES[arguments.shape], "max_length": max(512, arguments.max_length)}
        model_config = ["--model.init_args.model_config", json.dumps(config)]
    learning_rate = ["--model.init_args.learning_rate", str(arguments.learning_rate)]
    return [
        *(item for config in CONFIGS for item in ("--config", str(config))),
        "--seed_everything", str(arguments.seed),
        "--trainer.max_steps", str(total_steps),
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(work / "runs"),
        *model_config,
        *(learning_rate if arguments.learning_rate else []),
        "--model.init_args.final_lr_fraction", "0.0",  # the Trainer's linear schedule decays to 0
        "--model.init_args.grad_cache_chunk_size", str(chunk_size) if chunk_size else "null",
        "--data.init_args.tokenizer", arguments.tokenizer,
        "--data.init_args.data_dir", str(arguments.data),
        "--data.init_args.train_split", arguments.split,
        "--data.init_args.validation_split", "null",
        "--data.init_args.eval_sets", "[]",
        "--data.init_args.test_sets", "[]",  # else the datamodule tokenizes them as the CLI is built
        "--data.init_args.max_length", str(arguments.max_length),
        "--data.init_args.batch_size", str(batch_size),
        "--data.init_args.group_by_length", str(group_by_length).lower(),
        "--data.init_args.cache_dir", str(work / "cache"),
        "--checkpoint.save_top_k", "0",
        "--checkpoint.save_last", "false",
        "--export.enabled", "false",
    ]  # fmt: skip


class FitRoute:
    """One neobert_tasks ``fit``, built from the command line's arguments and timed by ``clock``."""

    def __init__(self, fit_args: list[str], clock: EmbeddingClock, callbacks: tuple = ()):
        # The benchmark's own command line is not the CLI's: hide it (LightningCLI warns about both).
        with mock.patch.object(sys, "argv", sys.argv[:1]):
            self.cli = neobert_tasks_main(args=fit_args, run=False)
        self.clock = clock
        # No validation runs, so early stopping on a validation metric would end the fit with an error.
        kept = [
            callback for callback in self.cli.trainer.callbacks if not isinstance(callback, EarlyStopping)
        ]
        self.cli.trainer.callbacks = [*kept, _LightningClock(clock), *callbacks]

    @property
    def task(self):
        return self.cli.model

    def train(self) -> None:
        self.clock.begin()
        self.clock.watch(self.task.model)
        self.cli.trainer.fit(self.task, datamodule=self.cli.datamodule)


# ------------------------------------------------------------------------------------------------------
# sentence-transformers: its trainer over the same initial model.


def export_initial_model(task, tokenizer: str, folder: Path, max_length: int) -> Path:
    """Write the task's backbone as a sentence-transformers folder (neobert_tasks' exporter)."""
    from transformers import AutoTokenizer

    from neobert_tasks.export.folder import export_model_folder

    export_model_folder(
        task.model,
        folder,
        tokenizer=AutoTokenizer.from_pretrained(tokenizer),
        pooling=task.pooling,
        normalize=True,
        max_seq_length=max_length,
    )
    return folder


@torch.no_grad()
def embedding_difference(task, model, texts: list[str]) -> float:
    """Largest difference between the two models' embeddings of ``texts``: 0, or float rounding, when
    they hold the same weights."""
    model.eval()
    theirs = model.encode(texts, convert_to_tensor=True, batch_size=len(texts))
    inputs = model.preprocess(texts)  # the same tokenizer, truncated at the model's max_seq_length
    task.model.eval()
    try:
        ours = task.embed({key: inputs[key] for key in ("input_ids", "attention_mask")})
    finally:
        task.model.train()
    return float((ours - theirs.to(ours.dtype)).abs().max())


def triplets(arguments: argparse.Namespace, work: Path) -> datasets.Dataset:
    """The training split as sentence-transformers reads it: columns anchor, positive, negative, in order."""
    path = arguments.data / f"{arguments.split}.parquet"
    dataset = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(work))
    return dataset.select_columns(list(ROLES))


class SentenceTransformersRoute:
    """``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss``, NO_DUPLICATES batches."""

    def __init__(
        self, folder: Path, dataset: datasets.Dataset, hparams, settings: dict, clock: EmbeddingClock
    ):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(folder), trust_remote_code=True, device="cpu")
        self.model.max_seq_length = settings["max_length"]
        self.dataset, self.hparams, self.settings, self.clock = dataset, hparams, settings, clock

    def train(self) -> None:
        from sentence_transformers import SentenceTransformerTrainer
        from sentence_transformers.sentence_transformer import losses

        self.clock.begin()
        self.clock.watch(self.model)
        trainer = SentenceTransformerTrainer(
            model=self.model,
            args=self.training_arguments(),
            train_dataset=self.dataset,
            loss=losses.MultipleNegativesRankingLoss(self.model, scale=1 / self.hparams.temperature),
            callbacks=[_TrainerClock(self.clock)],
        )
        trainer.train()

    def training_arguments(self):
        from sentence_transformers import SentenceTransformerTrainingArguments
        from sentence_transformers.base.sampler import BatchSamplers

        hparams, settings = self.hparams, self.settings
        return SentenceTransformerTrainingArguments(
            output_dir=str(settings["work"] / "sentence_transformers"),
            per_device_train_batch_size=settings["batch_size"],
            max_steps=settings["total_steps"],
            learning_rate=hparams.learning_rate,
            weight_decay=hparams.weight_decay,
            adam_beta1=hparams.betas[0],
            adam_beta2=hparams.betas[1],
            adam_epsilon=hparams.eps,
            warmup_steps=hparams.warmup_fraction,  # a fraction of the run in transformers 5
            lr_scheduler_type="linear",
            max_grad_norm=0.0,  # neobert_tasks' embedding config does not clip
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            dataloader_num_workers=0,
            use_cpu=True,
            logging_steps=50,  # Lightning's default log_every_n_steps
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=settings["seed"],
        )
