"""Shared LightningModule of every NeoBERT task: model source, optimiser, schedule, logging.

A task subclass names its head class, the config fields its head needs (``num_labels``, …), and
its evaluation; this base builds the model, the AdamW groups and the warmup/decay schedule sized from
``trainer.estimated_stepping_batches`` (so gradient accumulation and the number of devices count).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from transformers import PreTrainedModel

from neobert_tasks.data.keys import MODEL_INPUT_KEYS
from neobert_tasks.errors import ConfigError
from neobert_tasks.model.attention import backend_problem, settle_backend
from neobert_tasks.model.loading import OFFICIAL_CHECKPOINT, architecture, build_model
from neobert_tasks.tasks.compatibility import (
    apply_changed_settings,
    check_checkpoint_fits,
    check_checkpoint_labels,
    check_max_length_fits,
    check_tokenizer_fits,
    model_source,
    optimizer_settings,
    warn_if_schedule_changed,
)
from neobert_tasks.tasks.layers import freeze, parameter_counts
from neobert_tasks.tasks.lora import (
    FINGERPRINT_KEY,
    add_lora,
    check_lora_checkpoint,
    frozen_fingerprint,
    is_peft_model,
    lora_description,
    merged_copy,
    trainable_state_dict,
)
from neobert_tasks.tasks.optim import (
    build_optimizer,
    check_optimizer_options,
    check_optimizer_settings,
    half_precision_weights_warning,
    warmup_decay_schedule,
)


class NeoBERTTask(L.LightningModule):
    """Base of the task modules.

    Args:
        pretrained: Checkpoint to start from: a local directory or a hub id (null with ``model_config``).
        model_config: NeoBERTConfig fields of a randomly initialised model of any size (null with
            ``pretrained``), e.g.
            ``{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, intermediate_size: 96}``.
        attn_implementation: Attention backend: ``auto`` (the fastest for the device and precision), ``sdpa``,
            ``eager``, ``sdpa_varlen``, ``torch_varlen``, ``flash_attention_2`` or ``flex`` (docs/model.md).
        learning_rate: Peak learning rate of AdamW.
        weight_decay: AdamW weight decay, never applied to norms and biases.
        betas: AdamW (β1, β2); NeoBERT's recipe uses (0.9, 0.95).
        eps: AdamW epsilon.
        warmup_fraction: Fraction of the optimiser steps spent in linear warmup.
        warmup_steps: Warmup length in steps; overrides ``warmup_fraction`` when set.
        final_lr_fraction: Learning rate at the end of a linear or cosine schedule, as a fraction of the
            peak (``constant`` stays at the peak and ignores it).
        lr_schedule: Decay after warmup: ``linear``, ``cosine`` or ``constant``.
        gradient_checkpointing: Recompute block activations in the backward pass to save memory.
        compile: ``torch.compile`` each transformer block when ``fit`` starts (dynamic shapes, so the
            varying batch lengths reuse one compiled graph); the first steps are slower while it compiles.
            ``validate``, ``test`` and ``predict`` on their own run eager: one pass over a split rarely
            pays for a minute of compiling.
        allow_pickle_weights: Let ``pretrained`` load ``pytorch_model.bin`` (pickle, can run code) when it
            has no safetensors weights.
        peft: LoRA adapters instead of full fine-tuning, e.g. ``{r: 8, alpha: 16, dropout: 0.0,
            target_modules: [qkv, wo, w12, w3]}`` (these are the defaults; ``{}`` takes them all); the task
            head trains in full. Checkpoints then hold the trainable weights only.
        layer_decay: Layer-wise learning-rate decay: the head trains at ``learning_rate``, each layer below
            at this factor times the one above (ELECTRA/DeBERTa style; 0.8–0.95 typical). None: no decay.
        freeze_embeddings: Keep the token embedding fixed.
        freeze_layers: Keep the first N transformer blocks fixed.
        freeze_backbone: Keep the whole backbone fixed and train the head alone (a linear probe).
        optimizer: Another optimiser than fused AdamW, as a ``class_path`` (``torch.optim.SGD``, …) with
            ``init_args``; ``learning_rate``, ``weight_decay`` and the schedule still apply, ``betas`` and
            ``eps`` do not.
    """

    head_class: ClassVar[type[PreTrainedModel]]
    head_modules: ClassVar[tuple[str, ...]] = ()
    """Names of the head's modules: trained in full and saved with LoRA adapters."""

    def __init__(
        self,
        pretrained: str | None = OFFICIAL_CHECKPOINT,
        model_config: dict[str, Any] | None = None,
        attn_implementation: str = "auto",
        learning_rate: float = 2e-5,
        weight_decay: float = 1e-5,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        warmup_fraction: float = 0.06,
        warmup_steps: int | None = None,
        final_lr_fraction: float = 0.1,
        lr_schedule: str = "linear",
        gradient_checkpointing: bool = False,
        compile: bool = False,
        allow_pickle_weights: bool = False,
        peft: dict[str, Any] | None = None,
        layer_decay: float | None = None,
        freeze_embeddings: bool = False,
        freeze_layers: int = 0,
        freeze_backbone: bool = False,
        optimizer: OptimizerCallable | None = None,
    ):
        super().__init__()
        # Lightning reads the arguments of every __init__ on the call stack: the subclass's are saved too.
        self.save_hyperparameters()
        check_optimizer_options(
            "model.init_args.", learning_rate, weight_decay, betas, eps, warmup_fraction, warmup_steps,
            final_lr_fraction, lr_schedule,
        )  # fmt: skip
        check_optimizer_settings(self.hparams.get("optimizer"), "model.init_args.")
        self.model = build_model(
            self.head_class,
            pretrained,
            model_config,
            allow_pickle_weights,
            attn_implementation=attn_implementation,
            **self.head_config(),
        )
        if gradient_checkpointing:
            # transformers 5.x renamed it (the old name warns that it goes in v6); early 5.x lack the new one.
            enable = getattr(self.model, "activation_checkpointing_enable", None)
            (enable or self.model.gradient_checkpointing_enable)()
        # from_pretrained returns the model in eval mode and Lightning 2.6 keeps a module's mode at the start
        # of fit, so without this a fine-tuned checkpoint would train with dropout off.
        self.model.train()
        self.optimizer_factory = optimizer
        self.select_trainable(peft, layer_decay, freeze_embeddings, freeze_layers, freeze_backbone)

    def select_trainable(self, peft, layer_decay, freeze_embeddings, freeze_layers, freeze_backbone) -> None:
        """Freeze what is asked, or wrap the model with LoRA adapters (which freeze the rest themselves)."""
        if layer_decay is not None and not 0 < layer_decay <= 1:
            raise ConfigError(f"model.init_args.layer_decay must be in (0, 1], got {layer_decay}.")
        num_layers = self.network.config.num_hidden_layers
        if peft is not None:
            if freeze_embeddings or freeze_layers or freeze_backbone:
                raise ConfigError(
                    "model.init_args.peft trains the adapters and the head only: leave freeze_embeddings,"
                    " freeze_layers and freeze_backbone unset with it."
                )
            if self.hparams.get("model_config") is not None:
                rank_zero_warn(
                    "model.init_args.peft trains adapters over a randomly initialised backbone"
                    " (model.init_args.model_config is set): frozen random weights leave them little to"
                    " learn; give a pretrained model, or train without peft."
                )
            self.model = add_lora(self.model, peft, self.head_modules)
            # The checkpoint lacks the frozen weights: `on_load_checkpoint` checks what it holds instead.
            self.strict_loading = False
        else:
            freeze(self.model, num_layers, freeze_embeddings, freeze_layers, freeze_backbone)
            if freeze_backbone and layer_decay is not None:
                rank_zero_warn(
                    f"model.init_args.layer_decay {layer_decay} has nothing to scale with freeze_backbone:"
                    " only the head trains, at model.init_args.learning_rate."
                )
            if not any(parameter.requires_grad for parameter in self.model.parameters()):
                # An embedding task is its backbone: frozen, nothing is left to train.
                raise ConfigError(
                    f"model.init_args.freeze_backbone (or freeze_embeddings with every layer frozen) leaves"
                    f" {type(self).__name__} nothing to train, for it has no head outside the backbone;"
                    " freeze fewer layers, or train adapters with peft."
                )

    @property
    def network(self) -> PreTrainedModel:
        """The task's model itself (``base_model`` is its backbone), with any LoRA layers in it."""
        return self.model.get_base_model() if is_peft_model(self.model) else self.model

    def export_model(self) -> PreTrainedModel:
        """The model to ship: the task's model, or a copy with the LoRA adapters merged into its weights."""
        return merged_copy(self.model) if is_peft_model(self.model) else self.model

    def on_fit_start(self) -> None:
        trainable, total = parameter_counts(self.model)
        if trainable < total:
            peft = self.hparams.get("peft")
            how = lora_description(peft) if peft is not None else "the rest frozen"
            rank_zero_info(
                f"Training {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%; {how})."
            )
        precision = str(self.trainer.precision)
        if warning := half_precision_weights_warning(self.model, self.hparams.learning_rate, precision):
            rank_zero_warn(warning)
        if self._step_seed_base is None:
            self._step_seed_base = int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed()))

    def head_config(self) -> dict[str, Any]:
        """Config fields the head needs; subclasses add theirs (called before the model exists)."""
        return {}

    @staticmethod
    def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The part of a batch that goes into the model."""
        return {key: value for key, value in batch.items() if key in MODEL_INPUT_KEYS}

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        loss = self.model(**self.model_inputs(batch)).loss
        self.log_training_loss(loss, batch["input_ids"].shape[0])
        return loss

    def log_training_loss(self, loss: torch.Tensor, batch_size: int) -> None:
        """Log ``train/loss`` at the steps the loggers write (``trainer.log_every_n_steps``) and at the end
        of an epoch only: Lightning drops a step value logged in between, yet the call is among the
        costlier parts of a small model's step (bench/README.md, step breakdown). The progress bar shows
        the loss of the last step logged."""
        trainer = self._trainer
        if trainer is not None:
            every = trainer.log_every_n_steps
            if every == 0 or ((trainer.global_step + 1) % every != 0 and not trainer.is_last_batch):
                return  # 0: Lightning logs no step values at all
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)

    def configure_optimizers(self) -> dict[str, Any]:
        hparams = self.hparams
        optimizer = build_optimizer(
            self.model,
            hparams.learning_rate,
            hparams.weight_decay,
            betas=tuple(hparams.betas),
            eps=hparams.eps,
            optimizer_factory=self.optimizer_factory,
            layer_decay=hparams.get("layer_decay"),
            num_layers=self.network.config.num_hidden_layers,
        )
        total_steps = self.trainer.estimated_stepping_batches  # inf for an unbounded run: refused in words
        warn_if_schedule_changed(self._resumed_from, total_steps, self.trainer.ckpt_path)
        self._schedule_total_steps = int(total_steps) if total_steps != float("inf") else None
        scheduler = warmup_decay_schedule(
            optimizer,
            total_steps,
            warmup_fraction=hparams.warmup_fraction,
            warmup_steps=hparams.warmup_steps,
            final_lr_fraction=hparams.final_lr_fraction,
            schedule=hparams.lr_schedule,
        )
        self._configured_settings = optimizer_settings(
            optimizer, scheduler
        )  # before a checkpoint's replace them
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_start(self) -> None:
        if self._resumed_from is not None and self.trainer.lr_scheduler_configs:
            scheduler = self.trainer.lr_scheduler_configs[0].scheduler
            apply_changed_settings(
                self.trainer.optimizers[0], scheduler, self._configured_settings, self.trainer.global_step
            )

    def setup(self, stage: str) -> None:
        """Settle the attention backend and check that the data fits the model (vocabulary, input length)
        before any step runs; compile the blocks for ``fit`` when asked to."""
        if self._trainer is not None:  # build_model could only guess the device, from CUDA being present
            device_type = self.trainer.strategy.root_device.type
            backend = self.hparams.get("attn_implementation")
            problem = backend_problem(backend, device_type, training=stage == "fit")
            if problem:
                raise ConfigError(problem)
            # `auto` settles on one backend for the run's device and precision, and the log says which.
            rank_zero_info(settle_backend(self.network, backend, device_type, self.trainer.precision))
        if stage == "fit" and self.hparams.get("compile") and not self.network.base_model.blocks_compiled:
            self.network.base_model.compile_blocks()
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is not None:
            source = model_source(self.hparams.pretrained, self.hparams.model_config)
            if hasattr(datamodule, "tokenizer"):  # ids outside the embedding table
                check_tokenizer_fits(self.network, datamodule.tokenizer, source)
            check_max_length_fits(self.network, getattr(datamodule, "max_length", None), source)

    def log(self, name: str, value: Any, *args: Any, **kwargs: Any) -> None:
        """`LightningModule.log`, keeping a Python float's every digit: Lightning stores floats as float32
        (SQuAD's F1 in metrics.json was 3e-6 off the official script), but keeps a float64 tensor as is."""
        if isinstance(value, float) and self.device.type != "mps":  # MPS has no float64
            value = torch.tensor(value, dtype=torch.float64)
        super().log(name, value, *args, **kwargs)

    # ----------------------------------------------------------------------------------------------------
    # Evaluation: ``validate`` and ``test`` run the same two methods, told which stage they serve.

    def evaluation_step(
        self, stage: str, batch: dict[str, torch.Tensor], batch_index: int, dataloader_idx: int
    ) -> None:
        """Score one batch of ``stage`` (``validate`` or ``test``) from its dataloader ``dataloader_idx``."""
        raise NotImplementedError(f"{type(self).__name__} defines no evaluation_step.")

    def log_scores(self, stage: str, prefix: str) -> None:
        """Log the scores of the epoch of ``stage`` as ``<prefix>/<name>`` (``val``, ``test``); reset them."""
        raise NotImplementedError(f"{type(self).__name__} defines no log_scores.")

    def validation_step(self, batch, batch_index, dataloader_idx: int = 0) -> None:
        self.evaluation_step("validate", batch, batch_index, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self.log_scores("validate", "val")

    def test_step(self, batch, batch_index, dataloader_idx: int = 0) -> None:
        self.evaluation_step("test", batch, batch_index, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.log_scores("test", "test")

    # ----------------------------------------------------------------------------------------------------
    # Reproducible resuming.

    _step_seed_base: int | None = None  # set at fit start, or restored from the checkpoint resumed

    def on_train_batch_start(self, batch: Any, batch_index: int) -> None:
        """Reseed torch's generator from (seed, rank, epoch, batch) before every training batch.

        Dropout and MLM masking then depend on the step alone, not on how many random numbers were drawn
        before it (dataloader iterators and validation draw some), so a run resumed from a checkpoint
        draws exactly what the uninterrupted run drew. Ranks get different streams, like separate seeds.
        """
        seed = self._step_seed_base
        for part in (self.global_rank, self.current_epoch, batch_index):
            seed = (seed * 1_000_003 + part) % 2**63  # a fixed mix: the same in every process and version
        # Not torch.manual_seed: it also seeds every other backend's generators (CUDA, XPU, MTIA, …),
        # 0.3 ms per call on the CPU, a few percent of a small model's step. Only the CPU generator and
        # the model's own accelerator draw random numbers here.
        torch.default_generator.manual_seed(seed)
        if self.device.type != "cpu":
            torch.get_device_module(self.device.type).manual_seed(seed)

    # The steps this fit's schedule spans, and the checkpoint it resumed (read in configure_optimizers, which
    # Lightning calls after on_load_checkpoint), to tell a resume that re-plans the schedule.
    _schedule_total_steps: int | None = None
    _resumed_from: dict[str, Any] | None = None
    _configured_settings: list[dict[str, Any]] = []  # `optimizer_settings` of this command's options

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["neobert_config"] = architecture(self.network)  # see architecture_from_checkpoint
        checkpoint["step_seed_base"] = self._step_seed_base
        checkpoint["schedule_total_steps"] = self._schedule_total_steps
        if is_peft_model(self.model):  # the frozen backbone is rebuilt from model.pretrained: not saved
            checkpoint["state_dict"] = trainable_state_dict(self, checkpoint["state_dict"])
            checkpoint[FINGERPRINT_KEY] = frozen_fingerprint(self)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lightning loads the weights right after this hook; weights of other shapes are refused here.
        path = getattr(self.trainer, "ckpt_path", None) if self._trainer is not None else None
        check_checkpoint_fits(self, checkpoint, path, getattr(self.hparams, "num_labels", None))
        check_checkpoint_labels(checkpoint, path, getattr(self.hparams, "label_names", None))
        if is_peft_model(self.model):
            check_lora_checkpoint(self, checkpoint, f"Checkpoint '{path}'" if path else "The checkpoint")
        self._step_seed_base = checkpoint.get("step_seed_base")
        self._resumed_from = {key: checkpoint.get(key) for key in ("schedule_total_steps", "global_step")}
