"""What an export learns from the Lightning run that made it: the model card's facts.

Everything is read from the objects of the run (the task's and the datamodule's saved hyper-parameters,
the trainer, the best scores), so the card describes the run that was, not the config's defaults.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L

from neobert_tasks.data.glue import GLUE_HUB_ID
from neobert_tasks.export.model_card import CardFacts
from neobert_tasks.partial_evaluation import batch_counts
from neobert_tasks.tasks.lora import lora_description

# Task and datamodule hyper-parameters a reader of the card needs to judge and repeat the run.
REPORTED_TASK_SETTINGS = (
    "learning_rate", "weight_decay", "betas", "warmup_fraction", "warmup_steps", "lr_schedule",
    "final_lr_fraction", "classifier_dropout", "mlm_probability", "layer_decay",
)  # fmt: skip
# Settings reported only where they differ from their no-op default (not frozen, no accumulation or clipping).
REPORTED_TASK_CHANGES = {"freeze_layers": 0, "freeze_backbone": False}
# A training set cut short (limit_train_*) is reported too: the card must not read as training on all of it.
REPORTED_TRAINER_CHANGES = {
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "limit_train_batches": 1.0,
}
REPORTED_DATA_SETTINGS = (
    "batch_size",
    "max_length",
    "max_tokens",
    "stride",
    "doc_stride",
    "limit_train_samples",
)
# What a QA card's code needs to answer as `predict` does (empty for the other heads).
ANSWER_DATA_SETTINGS = ("max_length", "doc_stride")
ANSWER_TASK_SETTINGS = ("max_answer_length", "n_best_size", "version_2", "null_score_diff_threshold")


def _hub_dataset(datamodule: Any) -> tuple[str | None, str | None]:
    """(hub id, config) of the training data: GLUE's own, or the hub dataset a datamodule loaded."""
    task_name = getattr(datamodule, "task_name", None)
    if type(datamodule).__name__ == "GLUEDataModule":
        return GLUE_HUB_ID, task_name  # a local copy of GLUE is still GLUE
    if getattr(datamodule, "data_dir", None) is not None:
        return None, None
    hub_id = getattr(datamodule, "dataset_id", None)
    return hub_id, getattr(datamodule, "dataset_config", None)


def _data_name(datamodule: Any, dataset: str | None, dataset_config: str | None) -> str:
    """A short name for the data: the GLUE task, the hub dataset's name, or the data folder's."""
    if dataset_config or dataset:
        return dataset_config or dataset.split("/")[-1]
    data_dir = getattr(datamodule, "data_dir", None)
    return Path(data_dir).name if data_dir else "text"


def _data_description(datamodule: Any, dataset: str | None, dataset_config: str | None) -> str:
    """Where the training data came from, in words, for the card's first sentence."""
    data_dir = getattr(datamodule, "data_dir", None)
    if dataset:
        hub = f"[{dataset}](https://huggingface.co/datasets/{dataset})"
        name = f"{hub} ({dataset_config})" if dataset_config else hub
        return f"{name}, from the local copy `{data_dir}`" if data_dir else name
    return f"the local data in `{data_dir}`" if data_dir else "local data"


def _long_inputs(data_hparams: Any) -> str | None:
    """What becomes of an input longer than the run's ``max_length``, when ``predict`` does more than cut it
    (windows, a head and a tail), in words for the card; None when it is cut there."""
    length = data_hparams.get("max_length")
    if length is None:
        return None
    if "doc_stride" in data_hparams:
        return f"the `answer` function above reads a longer context in overlapping windows of {length} tokens"
    pipeline_sees = f"a pipeline or the Auto class sees its first {length} tokens (`truncation=True`)"
    overflow = data_hparams.get("overflow")
    if overflow == "chunk":
        return f"`predict` pools the logits of overlapping windows of a longer document; {pipeline_sees}"
    if overflow == "head_tail":
        return f"`predict` keeps the head and the tail of a longer document; {pipeline_sees}"
    if overflow is None and "stride" in data_hparams:
        return f"`predict` tags a longer input in overlapping windows; {pipeline_sees}"
    return None


def _initialisation(hparams: Any) -> str:
    """What the weights started from: a checkpoint, or a random model of the given size."""
    model_config = hparams.get("model_config")
    if model_config is None:
        return f"`{hparams.get('pretrained')}`"
    size = ", ".join(f"{key} {value}" for key, value in model_config.items())
    return f"a randomly initialised NeoBERT ({size})"


def _label_names(config) -> list[str] | None:
    """The head's label names, when it has named labels (not transformers' LABEL_0, LABEL_1 …)."""
    id2label = getattr(config, "id2label", None) or {}
    names = [str(id2label[index]) for index in sorted(id2label)]
    return names if names and names != [f"LABEL_{index}" for index in range(len(names))] else None


def _settings(hparams: Any, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: hparams[name] for name in names if name in hparams and hparams[name] is not None}


def card_facts(
    trainer: L.Trainer,
    pl_module: L.LightningModule,
    summary: dict[str, Any],
    license: str,
    progress: tuple[int | None, int | None] | None = None,
) -> CardFacts:
    """The model card's facts for the model ``pl_module`` exports at the end of ``trainer.fit``, or after
    ``validate`` of a checkpoint whose (epoch, step) ``progress`` gives."""
    datamodule = trainer.datamodule
    model = getattr(pl_module, "network", pl_module.model)  # the task's class, not a LoRA wrapper
    hparams = pl_module.hparams
    data_hparams = getattr(datamodule, "hparams", {}) if datamodule is not None else {}
    dataset, dataset_config = _hub_dataset(datamodule)
    pretrained = hparams.get("pretrained") if hparams.get("model_config") is None else None
    is_hub_id = pretrained is not None and not os.path.exists(os.path.expanduser(pretrained))
    settings = {
        **_settings(hparams, REPORTED_TASK_SETTINGS),
        **_settings(data_hparams, REPORTED_DATA_SETTINGS),
        # At the end of fit: the epochs trained, a fraction where it stopped inside one; of a validated
        # checkpoint, its epoch.
        "epochs": _epochs_trained(trainer) if progress is None else progress[0],
        "optimizer_steps": trainer.global_step if progress is None else progress[1],
        "precision": trainer.precision,
        "devices": trainer.world_size,
        "seed": os.environ.get("PL_GLOBAL_SEED"),
    }
    settings |= {
        name: hparams[name] for name, off in REPORTED_TASK_CHANGES.items() if hparams.get(name, off) != off
    }
    if hparams.get("peft"):  # the merged weights read like full fine-tuning's: say what trained
        settings["peft"] = f"{lora_description(hparams['peft'])}; the adapter alone is in adapter/"
    settings |= {
        name: value
        for name, off in REPORTED_TRAINER_CHANGES.items()
        if changed_from(value := getattr(trainer, name, off), off)
    }
    is_qa = type(model).__name__ == "NeoBERTForQuestionAnswering"
    answer_settings = (
        {**_settings(data_hparams, ANSWER_DATA_SETTINGS), **_settings(hparams, ANSWER_TASK_SETTINGS)}
        if is_qa
        else {}
    )
    return CardFacts(
        model_name=f"neobert-{_data_name(datamodule, dataset, dataset_config)}".lower(),
        architecture=type(model).__name__,
        base_model=pretrained if is_hub_id else None,
        label_names=_label_names(model.config),
        dataset=dataset,
        dataset_config=dataset_config,
        data_description=_data_description(datamodule, dataset, dataset_config),
        initialisation=_initialisation(hparams),
        best_metrics=summary.get("best_metrics") or {},
        monitor=summary.get("monitor"),
        hyperparameters={key: value for key, value in settings.items() if value is not None},
        max_length=data_hparams.get("max_length") if data_hparams else None,
        answer_settings=answer_settings,
        long_inputs=_long_inputs(data_hparams),
        # Two text columns make a pair, except a long document's title and text.
        text_pairs=len(getattr(datamodule, "text_columns", ())) == 2
        and getattr(datamodule, "title_column", None) is None,
        titled=getattr(datamodule, "title_column", None) is not None,
        command="python -m neobert_tasks fit --config training_config.yaml",
        license=license,
        partial_scores=_partial_scores(trainer, datamodule),
    )


def changed_from(value: Any, off: Any) -> bool:
    """Whether a trainer setting differs from its no-op value (limit_train_batches 1 is not 1.0)."""
    return value not in (None, 0) and not (type(value) is type(off) and value == off)


def _epochs_trained(trainer: L.Trainer) -> float | int:
    """Optimizer steps over the steps of an epoch, to 2 decimals: 0.75 for a fit that early stopping or
    max_steps ended inside its first epoch, which Lightning's epoch counter reports as 1."""
    batches = trainer.num_training_batches
    if not isinstance(batches, int) or batches <= 0:  # an iterable without a length: whole epochs
        return trainer.current_epoch
    epochs = trainer.global_step / math.ceil(batches / trainer.accumulate_grad_batches)
    return int(epochs) if epochs == int(epochs) else round(epochs, 2)


def _partial_scores(trainer: L.Trainer, datamodule: Any) -> str | None:
    """How the run's validation covered only part of its sets (``limit_eval_samples``, a batch limit), in
    words for the card; None when it covered them whole."""
    parts = [
        f"the first {kept} of the {total} examples of {name}"
        for name, (kept, total) in (getattr(datamodule, "evaluation_cuts", None) or {}).items()
        if name in datamodule.split_names_for("validate")
    ]
    if trainer.val_dataloaders is not None:
        run, held = batch_counts(trainer, "validate")
        if run < held:
            parts.append(f"{run} of the {held} validation batches (trainer.limit_val_batches)")
    return ", ".join(parts) or None
