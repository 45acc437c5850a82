"""Lightning callbacks for what Lightning lacks: checkpointing on the task's own metric, and exporting the
best model as a self-contained model folder with a ``metrics.json`` (prediction files:
`neobert_tasks.prediction_writer`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from neobert_tasks.errors import ConfigError, StorageError, describe_storage_fault, storage_fault
from neobert_tasks.export.folder import export_model_folder
from neobert_tasks.export.graph import check_graph_formats
from neobert_tasks.export.hub import check_can_push, check_repo_id, push_folder
from neobert_tasks.export.run_facts import card_facts
from neobert_tasks.model.pooling import POOLING_MODES
from neobert_tasks.run_directory import run_directory, run_of_checkpoint
from neobert_tasks.tasks.lora import ADAPTER_DIRECTORY, is_peft_model, save_adapter


def _metric_value(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


class BestModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that can monitor the task's main metric and remembers all metrics at the best.

    ``monitor: auto`` resolves to ``val/<datamodule.main_metric>`` (GLUE: Matthews for CoLA, F1 for MRPC
    and QQP, Pearson for STS-B, accuracy otherwise) or ``val/loss``; ``mode: auto`` is ``min`` for losses
    and ``max`` for scores. A NaN or infinite score is never taken as the best. All other arguments are
    ``ModelCheckpoint``'s.

    Args:
        monitor: Metric that picks the best checkpoint; auto for the task's main metric, null for the latest.
        mode: min or max; auto is min for a loss and max for a score.
        save_last: Also save last.ckpt after each validation (ResumeCheckpoint shares the file).
        enable_version_counter: Write name-v1.ckpt instead of overwriting an existing name.ckpt; off, so that
            a run, resumed or not, has exactly one last.ckpt.
    """

    def __init__(
        self,
        monitor: str | None = "auto",
        mode: str = "auto",
        save_last: bool | None = True,
        enable_version_counter: bool = False,
        **kwargs,
    ):
        # Declared here rather than left to **kwargs: LightningCLI writes ModelCheckpoint's default (true)
        # into the config of an argument it does not see, and a counter would write last-v1.ckpt.
        super().__init__(
            monitor=monitor,
            mode="max" if mode == "auto" else mode,
            save_last=save_last,
            enable_version_counter=enable_version_counter,
            **kwargs,
        )
        self.resolve_monitor, self.resolve_mode = monitor == "auto", mode == "auto"
        self.best_metrics: dict[str, float] = {}
        self._best_metrics_path = ""  # the best_model_path that best_metrics belong to
        self._trainer: L.Trainer | None = None

    def _resolve_auto(self, trainer: L.Trainer) -> None:
        if self.resolve_monitor:
            main_metric = getattr(trainer.datamodule, "main_metric", None)
            self.monitor = f"val/{main_metric}" if main_metric else "val/loss"
        if self.resolve_mode and self.monitor:  # monitor null: keep the latest checkpoints, no score
            self.mode = "min" if self.monitor.endswith("loss") else "max"
            self.kth_value = torch.tensor(math.inf if self.mode == "min" else -math.inf)

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        # Lightning turns NaN into the worst value and still keeps it while fewer than save_top_k models
        # are kept, so a broken validation (NaN Pearson) would become the "best" model and be exported.
        if current is not None and not bool(torch.isfinite(current)):
            rank_zero_warn(
                f"{self.monitor} is {current.item()} at step {trainer.global_step}:"
                " not kept as a best checkpoint."
            )
            return False
        return super().check_monitor_top_k(trainer, current)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._resolve_auto(trainer)
        super().setup(trainer, pl_module, stage)
        self._trainer = trainer  # state_dict (called while a checkpoint is written) reads its metrics

    _unscored = False  # the last validation left the monitor unscored: no top-k save until the next one

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._unscored = not self._monitor_logged(trainer, pl_module)
        if self._unscored:
            return  # no score to keep a checkpoint by; training goes on (last.ckpt is saved as always)
        super().on_validation_end(trainer, pl_module)
        self._remember_best_metrics(trainer)

    def _monitor_logged(self, trainer: L.Trainer, pl_module: L.LightningModule) -> bool:
        """Whether the validation logged the monitor. A monitor of an evaluation set that
        trainer.limit_val_batches left unscored (a debug run of an embedding config) is warned about, and the
        run goes on to export its final weights; any other is refused in one sentence (Lightning refuses it a
        little later with a traceback and a hint meant for whoever wrote the LightningModule)."""
        if trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking:
            return True  # validate and test save no checkpoint; a sanity check runs a few batches only
        if not self.monitor or self.monitor in trainer.callback_metrics:
            return True
        limit = trainer.limit_val_batches
        if any(self.monitor.startswith(prefix) for prefix in getattr(pl_module, "unscored_prefixes", ())):
            rank_zero_warn(
                f"checkpoint.monitor {self.monitor!r} was not logged by the validation at step"
                f" {trainer.global_step}: trainer.limit_val_batches {limit} ended it early; no best"
                " checkpoint from it."
            )
            return False
        logged = ", ".join(sorted(name for name in trainer.callback_metrics if name.startswith("val/")))
        cut = f", perhaps because trainer.limit_val_batches {limit} ended it early" if limit != 1.0 else ""
        raise ConfigError(
            f"checkpoint.monitor {self.monitor!r} is not among the metrics the validation at step"
            f" {trainer.global_step} logged ({logged or 'none'}){cut}; monitor one of those."
        )

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # With one validation per epoch (the default) ModelCheckpoint saves here, after validation ended.
        if self._unscored:
            return
        super().on_train_epoch_end(trainer, pl_module)
        self._remember_best_metrics(trainer)

    def _remember_best_metrics(self, trainer: L.Trainer) -> None:
        """Record the validation metrics once for each new best checkpoint (or the first validation)."""
        if getattr(trainer, "sanity_checking", True):
            return  # a few batches of an untrained model: not a score to report
        if self.best_model_path != self._best_metrics_path or not self.best_metrics:
            metrics = {
                name: _metric_value(value)
                for name, value in trainer.callback_metrics.items()
                if name.startswith("val/")
            }
            # No validation split, or one that left the monitor unscored: no score to report as the best.
            if metrics and (self.monitor is None or self.monitor in metrics):
                self.best_metrics = {**metrics, "epoch": trainer.current_epoch, "step": trainer.global_step}
                self._best_metrics_path = self.best_model_path

    def state_dict(self) -> dict[str, Any]:
        # ModelCheckpoint sets best_model_path, then writes the new best checkpoint, whose state this is:
        # record that validation's metrics now, or the file would hold the previous best's.
        if self._trainer is not None:
            self._remember_best_metrics(self._trainer)
        return {**super().state_dict(), "best_metrics": self.best_metrics}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_metrics = state_dict.pop("best_metrics", {})
        super().load_state_dict(moved_checkpoint_state(state_dict, self.dirpath))
        self._best_metrics_path = self.best_model_path


def moved_checkpoint_state(state: dict[str, Any], dirpath: str | None) -> dict[str, Any]:
    """A checkpoint callback's saved state, its paths moved into ``dirpath`` where the run folder was moved
    (its best checkpoint is there, under the same name). Lightning drops the best score of a state saved
    in another folder: the next validation, however bad, would become the best and be exported."""
    saved = state.get("dirpath")
    best = state.get("best_model_path") or ""
    if not dirpath or not saved or saved == dirpath or not best or Path(best).parent != Path(saved):
        return state

    def into(path: str) -> str:  # a path of the saved folder, now in dirpath
        return str(Path(dirpath) / Path(path).name) if path and Path(path).parent == Path(saved) else path

    if not Path(into(best)).is_file():
        return state  # a checkpoint of another run (fine-tuning on from it): nothing of it is here
    paths = {
        key: into(state.get(key) or "")
        for key in ("best_model_path", "kth_best_model_path", "last_model_path")
    }
    best_k = {into(path): score for path, score in state.get("best_k_models", {}).items()}
    return {**state, **paths, "dirpath": dirpath, "best_k_models": best_k}


class ExportBestModel(L.Callback):
    """At the end of ``fit``: load the best checkpoint's weights, write them to ``<run dir>/<directory>`` as a
    self-contained model folder (see `neobert_tasks.export.folder`: Hugging Face weights and config, the
    remote code that loads them without neobert_tasks, the tokenizer, sentence-transformers files, a model
    card, and ONNX or ``torch.export`` graphs if asked), then ``<run dir>/metrics.json`` with the best scores.

    Args:
        directory: Folder inside the run directory that receives the exported model.
        enabled: Set false to skip the export.
        pooling: Sentence-embedding pooling written for sentence-transformers: mean or cls.
        formats: Graph formats to add to the folder: onnx (``model.onnx``, checked against PyTorch with
            onnxruntime) and/or pt2 (``model.pt2``, a ``torch.export`` program).
        license: Licence written into the model card's metadata (NeoBERT itself is MIT).
        after_validate: ``validate --ckpt_path <checkpoint>`` also exports that checkpoint, its card giving
            the scores just computed, into ``<validate folder>/<directory>`` (``<run>/validate/export``): how
            to ship a checkpoint other than the best.
        push_to_hub: Hub repository (``owner/name``) that receives the export, as one commit, once written;
            the id and a token are checked before training starts.
        hub_private: Create that repository private (nothing is published by mistake); an existing one keeps
            its visibility.
    """

    def __init__(
        self,
        directory: str = "export",
        enabled: bool = True,
        pooling: str = "mean",
        formats: list[str] | None = None,
        license: str = "mit",
        after_validate: bool = False,
        push_to_hub: str | None = None,
        hub_private: bool = True,
    ):
        if pooling not in POOLING_MODES:
            raise ConfigError(f"export.pooling {pooling!r} is not one of {', '.join(POOLING_MODES)}.")
        self.formats = list(formats or [])
        check_graph_formats(self.formats)
        self.directory, self.enabled, self.pooling, self.license = directory, enabled, pooling, license
        self.after_validate = after_validate
        if push_to_hub:
            check_repo_id(push_to_hub, "export.push_to_hub")
        self.push_to_hub, self.hub_private = push_to_hub, hub_private

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Hours of training must not end in "no token": what the push needs is checked before the first step.
        exports = stage == TrainerFn.FITTING or (stage == TrainerFn.VALIDATING and self.after_validate)
        if self.enabled and self.push_to_hub and exports and trainer.is_global_zero:
            check_can_push(self.push_to_hub, "export.push_to_hub")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        checkpoint = trainer.checkpoint_callback
        best_path = getattr(checkpoint, "best_model_path", "")
        if best_path:
            state = torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"]
            pl_module.load_state_dict(state, strict=pl_module.strict_loading)  # LoRA: trainable weights only
        elif getattr(checkpoint, "monitor", None) and getattr(checkpoint, "save_top_k", 0):
            rank_zero_warn(f"No validation gave a finite {checkpoint.monitor}: exporting the final weights.")
        run_dir = run_directory(trainer)
        if not trainer.is_global_zero:
            return
        export_dir = run_dir / self.directory
        best_score = getattr(checkpoint, "best_model_score", None)
        summary = {
            "monitor": getattr(checkpoint, "monitor", None),
            "best_score": None if best_score is None else _metric_value(best_score),
            "best_checkpoint": best_path or None,
            "export_dir": str(export_dir),
            "best_metrics": getattr(checkpoint, "best_metrics", {}),
        }
        self.write(trainer, pl_module, summary, run_dir / "config.yaml")
        # Written last: a run folder with metrics.json holds a finished export (the GLUE suite relies on it).
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
        which = "best" if best_path else "final"
        rank_zero_info(f"Exported the {which} model to {export_dir}; scores in {run_dir / 'metrics.json'}")
        self.push(export_dir)

    def export_validated(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """What ``after_validate`` asks of ``validate``: the checkpoint it scored, with those scores."""
        if not trainer.ckpt_path:
            rank_zero_warn("export.after_validate: validate scored no checkpoint (--ckpt_path); no export.")
            return
        if not trainer.is_global_zero:
            return
        # The checkpoint's epoch and step, for the card; mmap reads them without loading the weights again.
        saved = torch.load(trainer.ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        progress = saved.get("epoch"), saved.get("global_step")
        scores = {name: _metric_value(value) for name, value in trainer.callback_metrics.items()}
        export_dir = run_directory(trainer) / self.directory
        summary = {  # no monitor: the card's scores are this checkpoint's, not the best of a fit
            "monitor": None,
            "best_checkpoint": trainer.ckpt_path,
            "export_dir": str(export_dir),
            "best_metrics": {
                **{name: value for name, value in scores.items() if name.startswith("val/")},
                **dict(zip(("epoch", "step"), progress, strict=True)),
            },
        }
        run = run_of_checkpoint(trainer.ckpt_path)  # the config that trained it, for a run's checkpoint
        self.write(trainer, pl_module, summary, (run or run_directory(trainer)) / "config.yaml", progress)
        rank_zero_info(f"Exported {trainer.ckpt_path} to {export_dir}")
        self.push(export_dir)

    def push(self, export_dir: Path) -> None:
        """Upload the written export to ``push_to_hub``, if set (rank zero only, as the export)."""
        if self.push_to_hub:
            address = push_folder(export_dir, self.push_to_hub, private=self.hub_private)
            rank_zero_info(f"Pushed {export_dir} to the hub: {address}")

    def write(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        summary: dict[str, Any],
        config: Path,
        progress: tuple[int | None, int | None] | None = None,
    ) -> None:
        """The model folder of ``pl_module``'s weights into ``summary["export_dir"]``, its card from the run,
        ``summary``'s scores and ``progress`` (epoch, step; None: the trainer's), a LoRA run's adapter beside
        it."""
        export_dir, datamodule = Path(summary["export_dir"]), trainer.datamodule
        try:
            differences = export_model_folder(
                pl_module.export_model() if hasattr(pl_module, "export_model") else pl_module.model,
                export_dir,
                tokenizer=getattr(datamodule, "tokenizer", None),
                max_seq_length=getattr(datamodule, "max_length", None),
                **self.sentence_embedding(pl_module, datamodule),
                card=card_facts(trainer, pl_module, summary, self.license, progress),
                training_config=config,
                formats=self.formats,
            )
        except Exception as error:  # tokenizers and safetensors report a full disk in their own exceptions
            if (fault := storage_fault(error)) is None:
                raise
            raise StorageError(
                f"Could not write the export '{export_dir}' ({describe_storage_fault(fault)}): it is"
                " incomplete; make room and run the command again (a fit: with --ckpt_path last)."
            ) from error
        for name, difference in differences.items():
            if difference is not None:
                rank_zero_info(f"{name}: largest difference to PyTorch {difference:.2e}")
        if is_peft_model(pl_module.model):  # the merged model above; the adapter alone, in PEFT's format
            hparams = pl_module.hparams
            base = hparams.get("pretrained") if hparams.get("model_config") is None else None
            save_adapter(pl_module.model, export_dir / ADAPTER_DIRECTORY, base)

    def sentence_embedding(self, pl_module: L.LightningModule, datamodule) -> dict[str, Any]:
        """How sentence-transformers should embed with the export: ``export.pooling`` for a task trained for
        something else; an embedding task's own pooling, normalisation and instruction prompts."""
        trained = getattr(pl_module, "sentence_embedding", None)
        if trained is None:
            return {"pooling": self.pooling}
        prompts = getattr(datamodule, "prompts", None) or None
        return {**trained, "prompts": prompts}
