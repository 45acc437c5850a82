"""The training routes compared by ``fine_tuning.py``: neobert_tasks ``fit``, transformers ``Trainer``.

Each route builds its own data pipeline from its parquet sample (``fine_tuning.sample_task``), loads the
same initial weights into a ``NeoBERTForSequenceClassification`` of the same shape, and reports every
optimiser step to its ``StepClock``. The Trainer routes reproduce run_glue.py's behaviour (tokenize with
truncation at ``max_length``, pad to ``max_length`` or per batch) with the hyperparameters of
neobert_tasks' task config (learning rate, weight decay, AdamW betas and epsilon, 6% warmup then linear
decay to 0, no clipping).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from unittest import mock

import datasets
import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    default_data_collator,
)

from bench.interleave import StepClock
from neobert_tasks.cli import main as neobert_tasks_main
from neobert_tasks.data.glue import GLUE_TASKS
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification

REPOSITORY = Path(__file__).resolve().parents[1]
LIGHTNING_PRECISION = {"fp32": "32-true", "bf16": "bf16-mixed"}


@dataclass
class RouteSettings:
    """What all routes of one benchmark configuration share."""

    task: str
    shape: dict[str, int]
    precision: str
    batch_size: int
    total_steps: int
    learning_rate: float
    data_dirs: dict[str, Path]  # training sample per route family, see fine_tuning.sample_task
    tokenizer: str
    max_length: int
    work_dir: Path
    initial_state: dict[str, torch.Tensor]
    device: str = "cpu"  # cpu or cuda: where every route trains

    @property
    def task_config(self) -> Path:
        return REPOSITORY / "configs" / "glue" / f"{self.task}.yaml"

    @property
    def weight_decay(self) -> float:
        return float(yaml.safe_load(self.task_config.read_text())["model"]["init_args"]["weight_decay"])

    @property
    def num_labels(self) -> int:
        return GLUE_TASKS[self.task].num_labels


class NeoBERTTasksRoute:
    """``fit`` as the command line builds it, from the task's config; validation is left out of the run."""

    compile: bool | None = None  # None: the task config's default (compiled blocks for GLUE)
    attn_implementation: str | None = None  # None: the task's default
    extra_arguments: tuple[str, ...] = ()

    def __init__(self, settings: RouteSettings, clock: StepClock):
        self.settings, self.clock = settings, clock
        self.model: torch.nn.Module | None = None
        self.extra_callbacks: list = []  # e.g. the profiler's (profile_step.py)

    def arguments(self) -> list[str]:
        settings = self.settings
        model_config = {**settings.shape, "max_length": 512}
        backend = ["--model.init_args.attn_implementation", self.attn_implementation]
        return [
            "--config", str(settings.task_config),
            *self.device_arguments(),
            "--trainer.precision", LIGHTNING_PRECISION[settings.precision],
            "--trainer.max_steps", str(settings.total_steps),
            "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.default_root_dir", str(settings.work_dir / "runs"),
            "--model.init_args.pretrained", "null",
            "--model.init_args.model_config", json.dumps(model_config),
            "--model.init_args.learning_rate", str(settings.learning_rate),
            "--model.init_args.final_lr_fraction", "0.0",  # the Trainer's linear schedule decays to 0
            *(["--model.init_args.compile", str(self.compile).lower()] if self.compile is not None else []),
            *(backend if self.attn_implementation else []),
            *self.extra_arguments,
            "--data.init_args.tokenizer", settings.tokenizer,
            "--data.init_args.data_dir", str(settings.data_dirs["grouped"]),
            "--data.init_args.max_length", str(settings.max_length),
            "--data.init_args.batch_size", str(settings.batch_size),
            "--data.init_args.cache_dir", str(settings.work_dir / "cache"),
            "--checkpoint.save_top_k", "0",
            "--checkpoint.save_last", "false",
            "--export.enabled", "false",
        ]  # fmt: skip

    def device_arguments(self) -> list[str]:
        """The CPU preset, or one CUDA device (the bf16 preset's precision is given by --precisions)."""
        if self.settings.device == "cpu":
            return ["--config", str(REPOSITORY / "configs" / "presets" / "cpu.yaml")]
        return ["--trainer.accelerator", "gpu", "--trainer.devices", "1"]

    def train(self) -> None:
        # The benchmark's own command line is not the CLI's: hide it (LightningCLI warns about both).
        with mock.patch.object(sys, "argv", sys.argv[:1]):
            cli = neobert_tasks_main(args=self.arguments(), run=False)
        task = cli.model
        task.model.load_state_dict(self.settings.initial_state)
        # The run has no validation (it would be timed with the steps); early stopping on a validation
        # metric would end it after the first epoch with an error.
        callbacks = [
            callback for callback in cli.trainer.callbacks if not isinstance(callback, EarlyStopping)
        ]
        # The clock last: its step end may wait for the other routes' turns, which no callback should time.
        cli.trainer.callbacks = [*callbacks, *self.extra_callbacks, _LightningClock(self.clock)]
        self.clock.watch(task.model)
        cli.trainer.fit(task, datamodule=cli.datamodule)
        self.model, self.datamodule = task.model, cli.datamodule

    def trained_model(self) -> torch.nn.Module:
        return self.model


class NeoBERTTasksEagerRoute(NeoBERTTasksRoute):
    """neobert_tasks without ``torch.compile``: what compiling the blocks is worth."""

    compile = False


class NeoBERTTasksPaddedRoute(NeoBERTTasksRoute):
    """neobert_tasks on the padded ``sdpa`` backend: what unpadding is worth."""

    attn_implementation = "sdpa"


class NeoBERTTasksVarlenRoute(NeoBERTTasksRoute):
    attn_implementation = "sdpa_varlen"


class NeoBERTTasksTorchVarlenRoute(NeoBERTTasksRoute):
    """PyTorch's own FlashAttention kernel (``varlen_attn``) on the unpadded tokens; CUDA only."""

    attn_implementation = "torch_varlen"


class NeoBERTTasksExactPaddingRoute(NeoBERTTasksRoute):
    """Batches padded to their longest example only, not to a multiple of 8."""

    extra_arguments = ("--data.init_args.pad_to_multiple_of", "null")


class NeoBERTTasksTokenBudgetRoute(NeoBERTTasksRoute):
    """Batches sized by a token budget (``data.max_tokens: auto``: ``batch_size`` examples on average)."""

    extra_arguments = ("--data.init_args.max_tokens", "auto")


class _LightningClock(L.Callback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_start(self, trainer, pl_module) -> None:
        self.clock.start()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.clock.step_done()


class _TrainerClock(TrainerCallback):
    def __init__(self, clock: StepClock):
        self.clock = clock

    def on_train_begin(self, args, state, control, **kwargs):
        self.clock.start()

    def on_step_end(self, args, state, control, **kwargs):
        self.clock.step_done()


class TrainerRoute:
    """transformers ``Trainer`` over the same model class, as run_glue.py runs it."""

    pad_to_max_length = False
    # The sample is already a random draw of batches of the Trainer's LengthGroupedSampler over the whole
    # split, in order (fine_tuning.sample_task); replaying it sequentially keeps those batches.
    sampling = "sequential"
    sample = "trainer_grouped"
    attn_implementation: str | None = None  # None: the class's default, what from_pretrained picks

    def __init__(self, settings: RouteSettings, clock: StepClock):
        self.settings, self.clock = settings, clock
        self.model: torch.nn.Module | None = None
        self.extra_callbacks: list = []  # e.g. the profiler's (profile_step.py)

    def train(self) -> None:
        settings = self.settings
        padding = "max_length" if self.pad_to_max_length else False
        dataset = tokenized_split(settings, self.sample, "train", padding)
        extra = {"attn_implementation": self.attn_implementation} if self.attn_implementation else {}
        config = NeoBERTConfig(**settings.shape, num_labels=settings.num_labels, max_length=512, **extra)
        self.model = NeoBERTForSequenceClassification(config)
        self.model.load_state_dict(settings.initial_state)
        self.clock.watch(self.model)
        arguments = TrainingArguments(
            output_dir=str(settings.work_dir / type(self).__name__),
            per_device_train_batch_size=settings.batch_size,
            max_steps=settings.total_steps,
            learning_rate=settings.learning_rate,
            weight_decay=settings.weight_decay,
            adam_beta1=0.9,
            adam_beta2=0.95,
            adam_epsilon=1e-8,
            warmup_steps=0.06,  # a fraction of the run in transformers 5
            lr_scheduler_type="linear",
            max_grad_norm=0.0,  # neobert_tasks' GLUE configs do not clip
            bf16=settings.precision == "bf16",
            use_cpu=settings.device == "cpu",
            train_sampling_strategy=self.sampling,
            logging_steps=50,  # Lightning's default log_every_n_steps
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            disable_tqdm=True,
            seed=0,
        )
        tokenizer = load_tokenizer(settings.tokenizer)
        collator = default_data_collator if self.pad_to_max_length else DataCollatorWithPadding(tokenizer)
        trainer = Trainer(
            model=self.model,
            args=arguments,
            train_dataset=dataset,
            data_collator=collator,
            processing_class=tokenizer,
            callbacks=[*self.extra_callbacks, _TrainerClock(self.clock)],  # the clock last, as above
        )
        trainer.train()

    def trained_model(self) -> torch.nn.Module:
        return self.model


class TrainerMaxLengthRoute(TrainerRoute):
    pad_to_max_length = True
    sampling = "random"
    sample = "uniform"


class TrainerVarlenRoute(TrainerRoute):
    """The dynamic-padding Trainer on neobert_tasks' default attention backend: model vs loop."""

    attn_implementation = "sdpa_varlen"


ROUTES = {
    "neobert_tasks": NeoBERTTasksRoute,
    "neobert_tasks_eager": NeoBERTTasksEagerRoute,
    "neobert_tasks_padded": NeoBERTTasksPaddedRoute,
    "neobert_tasks_varlen": NeoBERTTasksVarlenRoute,
    "neobert_tasks_torch_varlen": NeoBERTTasksTorchVarlenRoute,
    "neobert_tasks_exact_padding": NeoBERTTasksExactPaddingRoute,
    "neobert_tasks_token_budget": NeoBERTTasksTokenBudgetRoute,
    "trainer_max_length": TrainerMaxLengthRoute,
    "trainer_dynamic": TrainerRoute,
    "trainer_dynamic_varlen": TrainerVarlenRoute,
}


@cache
def load_tokenizer(path: str):
    return AutoTokenizer.from_pretrained(path)


def tokenized_split(settings: RouteSettings, sample: str, split: str, padding) -> datasets.Dataset:
    """One split of the sample, tokenized as run_glue.py does (truncation at ``max_length``)."""
    task = GLUE_TASKS[settings.task]
    raw = datasets.load_dataset(
        "parquet",
        data_files=str(settings.data_dirs[sample] / f"{split}.parquet"),
        split="train",
        cache_dir=str(settings.work_dir / "cache"),
    )
    tokenizer = load_tokenizer(settings.tokenizer)

    def encode(rows):
        texts = [rows[column] for column in task.text_columns]
        encoded = tokenizer(*texts, padding=padding, max_length=settings.max_length, truncation=True)
        encoded["labels"] = rows["label"]
        return encoded

    return raw.map(encode, batched=True, remove_columns=raw.column_names)


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, settings: RouteSettings) -> float:
    """Accuracy on the sample's validation examples, the same evaluation for every route."""
    split = GLUE_TASKS[settings.task].validation_splits[0]
    dataset = tokenized_split(settings, "uniform", split, False)
    dataset = dataset.select_columns([name for name in dataset.column_names if name != "token_type_ids"])
    collator = DataCollatorWithPadding(load_tokenizer(settings.tokenizer))
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, collate_fn=collator)
    model.to(settings.device).eval()
    correct = total = 0
    # Eager: the blocks were compiled in the route's thread, and torch 2.11's dynamo crashes (SIGSEGV in
    # FakeTensorMode) recompiling them for inference here in the main thread; the accuracy is the same.
    eager = torch.compiler.set_stance("force_eager")
    autocast = torch.autocast(settings.device, dtype=torch.bfloat16, enabled=settings.precision == "bf16")
    with eager, autocast:
        for batch in loader:
            batch = {key: value.to(settings.device) for key, value in batch.items()}
            labels = batch.pop("labels")
            logits = model(**batch).logits
            correct += int((logits.argmax(-1) == labels).sum())
            total += len(labels)
    return correct / max(total, 1)
