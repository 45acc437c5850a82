"""The ``python -m neobert_tasks fit|validate|test|predict --config …`` command line (LightningCLI).

What it adds to LightningCLI:
* the task's label information flows from the datamodule to the model by argument linking
  (``data.num_labels`` → ``model.num_labels`` and so on), so it is never typed twice;
* three always-present callbacks with their own config sections: ``checkpoint`` (best checkpoint on
  the task's main metric), ``export`` (``save_pretrained`` of the best model plus ``metrics.json``)
  and ``prediction_writer`` (submission files);
* TensorBoard and CSV logging into ``<trainer.default_root_dir>/version_N`` unless ``trainer.logger``
  is set, with the resolved ``config.yaml`` saved beside them;
* ``fit`` on data without a validation split turns off early stopping on ``val/*`` metrics;
* ``loss_guard`` stops ``fit`` at a NaN or infinite loss before a broken checkpoint is written, and a
  mistake in the config, the data or a checkpoint ends the command with one sentence and exit status 2
  (`NeoBERTArgumentParser` words jsonargparse's errors so).
"""

from __future__ import annotations

import copy
import signal
import sys
import warnings
from pathlib import Path

from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from neobert_tasks.argument_parser import NeoBERTArgumentParser
from neobert_tasks.callbacks import BestModelCheckpoint, ExportBestModel
from neobert_tasks.checkpoint_paths import (
    check_base_model_present,
    resolve_checkpoint_path,
    take_checkpoint_labels,
)
from neobert_tasks.class_paths import check_checkpoint_class
from neobert_tasks.console import CompactModelSummary, quiet_libraries
from neobert_tasks.data.base import TokenizedDataModule
from neobert_tasks.data.text import check_tokenizer_to_train
from neobert_tasks.errors import (
    ConfigError,
    StorageError,
    UserInputError,
    describe_storage_fault,
    error_chain,
    missing_requirement,
    storage_fault,
)
from neobert_tasks.final_validation import ValidateFinalStep
from neobert_tasks.interrupt import StopOnInterrupt, report_stop
from neobert_tasks.model.loading import architecture_from_checkpoint
from neobert_tasks.out_of_memory import MemoryFaultPosition, describe_memory_fault, memory_fault
from neobert_tasks.partial_evaluation import PartialEvaluationWarning
from neobert_tasks.prediction_writer import PredictionWriter, write_validation_predictions
from neobert_tasks.resume import ResumeCheckpoint, load_checkpoint_file, use_atomic_checkpoints
from neobert_tasks.run_directory import (
    EVALUATION_FOLDERS,
    RunConfigCallback,
    RunDirectory,
    check_writable,
    next_version,
    pin_logger_versions,
    remove_unused_run_folder,
    repoint_loggers,
    run_of_checkpoint,
)
from neobert_tasks.run_summary import ResultTable, print_summary
from neobert_tasks.tasks.base import NeoBERTTask
from neobert_tasks.trainer_settings import check_trainer_counts, trainer_settings_refusal
from neobert_tasks.training_guard import NonFiniteLossGuard

# What `--help` says first, instead of LightningCLI's "Lightning Trainer command line tool".
DESCRIPTION = (
    "Fine-tune NeoBERT on a task from YAML configs, e.g. `fit --config configs/glue/sst2.yaml` (add"
    " `--config configs/presets/<preset>.yaml` to compose); `fit --help` lists every option, and"
    " `fit --config <file> --print_config` the resolved config. README.md lists the tasks and presets."
)
# (datamodule property, model argument): linked when both exist for the chosen classes.
LINKED_ARGUMENTS = (
    ("num_labels", "num_labels"),
    ("problem_type", "problem_type"),
    ("label_names", "label_names"),
    ("task_name", "task_name"),
    ("version_2", "version_2"),
    ("mask_token_id", "mask_token_id"),
    ("special_token_ids", "special_token_ids"),
    ("vocab_size", "vocab_size"),
)

# The CSV logger shares the TensorBoard logger's version folder on purpose (see instantiate_trainer), where
# SaveConfigCallback has already written config.yaml; its warning about a non-empty folder is noise.
warnings.filterwarnings("ignore", message=r"Experiment logs directory .* exists and is not empty")
# Lightning's adverts and device lines, a library deprecation: lines a user does not need (see console.py).
quiet_libraries()

# sysexits.h: an input/output error, here a write the disk refused (full, read-only, no permission).
EX_IOERR = 74

LOGGER_CLASSES = ("lightning.pytorch.loggers.TensorBoardLogger", "lightning.pytorch.loggers.CSVLogger")


class NeoBERTCLI(LightningCLI):
    """LightningCLI over any neobert_tasks task module and datamodule, chosen by ``class_path``."""

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(BestModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(ExportBestModel, "export")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_lightning_class_args(ResumeCheckpoint, "resume_checkpoint")
        parser.add_lightning_class_args(NonFiniteLossGuard, "loss_guard")
        parser.add_lightning_class_args(CompactModelSummary, "model_summary")
        parser.link_arguments("trainer.enable_model_summary", "model_summary.enabled")
        for source, target in LINKED_ARGUMENTS:
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}", apply_on="instantiate")

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if not add_subcommands:
            # `main(args=["--config", "<run>/config.yaml"], run=False)` builds a run's classes from its saved
            # config, which also holds the subcommand's own keys: accept them, unused.
            for name, kind in (("ckpt_path", str | None), ("weights_only", bool | None)):
                self.parser.add_argument(
                    f"--{name}", type=kind, default=None, help="Unused without a subcommand."
                )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        # LightningCLI has applied a --ckpt_path checkpoint's saved hyperparameters since parse_arguments;
        # the model options typed for this command win over them.
        for key, value in self._typed_model_options.items():
            config[key] = value
        trainer = config.trainer
        check_trainer_counts(trainer)
        check_tokenizer_to_train(config)  # before the datamodule trains one at instantiation
        root = str(Path(trainer.default_root_dir or "runs").expanduser())  # ~/runs: not a folder named ~
        self._default_loggers = trainer.logger is None or trainer.logger is True
        if self._default_loggers:
            trainer.logger = [
                {"class_path": name, "init_args": {"save_dir": root, "name": ""}} for name in LOGGER_CLASSES
            ]
        self._added_csv_logger = add_csv_logger(trainer, root) if not self._default_loggers else False
        # `fit --ckpt_path last` continues the resumed run's folder rather than starting version_N+1.
        version = self._resume_version if self._resume_version is not None else next_version(root)
        numbered = version if self._resume_version is None and self.subcommand == "fit" else None
        # validate/test/predict of a run's checkpoint write into that run (<run>/validate, …), unless the
        # command line says where to write (--trainer.default_root_dir).
        typed_root = any(arg.startswith("--trainer.default_root_dir") for arg in self._command_line)
        evaluates = self.subcommand in EVALUATION_FOLDERS and not typed_root
        checkpoint_run = run_of_checkpoint(config.get("ckpt_path"))
        # validate/test/predict write no checkpoint: their checkpoint callback keeps the checkpoint's run
        self._checkpoint_run = checkpoint_run if self.subcommand in EVALUATION_FOLDERS else None
        self._evaluated_run = checkpoint_run if evaluates else None
        if self._evaluated_run is not None:
            repoint_loggers(trainer.logger, root, self._evaluated_run)
            root, version = str(self._evaluated_run), EVALUATION_FOLDERS[self.subcommand]
        # The run folder is <root>/version_N whatever the loggers (see neobert_tasks.run_directory), or the
        # version given to a TensorBoard or CSV logger under <root> (the GLUE suite's seed_<n>).
        version, self._pinned_loggers = pin_logger_versions(trainer.logger, root, version)
        self._claims_new_folder = version == numbered  # a fit started beside this one may take the same N
        self._run_dir = Path(root).resolve() / (version if isinstance(version, str) else f"version_{version}")
        self._typed_root = trainer.default_root_dir
        if self._default_loggers and self.subcommand == "predict":
            # predict logs no metric: its loggers would only put an event file and hparams.yaml among the
            # prediction files. Without loggers, trainer.log_dir is default_root_dir: still the run folder.
            trainer.logger, trainer.default_root_dir = False, str(self._run_dir)

    def after_instantiate_classes(self) -> None:
        # config.yaml records the loggers as configured, so that a run of it starts a run folder of its own
        # (and the default ones follow the trainer.default_root_dir it is run with).
        for init_args in self._pinned_loggers:
            init_args["version"] = None
        config = self.config[self.subcommand] if self.subcommand else self.config
        config.trainer.default_root_dir = self._typed_root  # config.yaml records the root as given
        if self._default_loggers:
            config.trainer.logger = None
        elif self._added_csv_logger:
            config.trainer.logger = config.trainer.logger[:-1]  # as configured

    def after_fit(self) -> None:
        print_summary(self.trainer, "fit")

    def after_validate(self) -> None:
        exporters = [callback for callback in self.trainer.callbacks if isinstance(callback, ExportBestModel)]
        if exporters and exporters[0].enabled and exporters[0].after_validate:
            exporters[0].export_validated(self.trainer, self.model)
        print_summary(self.trainer, "validate")
        writers = [callback for callback in self.trainer.callbacks if isinstance(callback, PredictionWriter)]
        if writers and writers[0].after_validate:
            write_validation_predictions(self.trainer, self.model, self.datamodule)

    def after_test(self) -> None:
        print_summary(self.trainer, "test")

    def before_fit(self) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, ResumeCheckpoint):
                callback.remember_metric_history(self.trainer)
        # Without a validation split (a local copy lacking one, like QQP's in ../shared), or with validation
        # turned off (trainer.limit_val_batches: 0), no val/* metric is ever logged, and an EarlyStopping on
        # one would end the run with an error after one epoch.
        split_names_for = getattr(self.datamodule, "split_names_for", None)
        has_split = split_names_for is None or bool(split_names_for("validate"))
        if has_split and self.trainer.limit_val_batches != 0:
            return
        reason = "Validation is off (trainer.limit_val_batches: 0)" if has_split else "No validation split"
        for callback in list(self.trainer.callbacks):
            if isinstance(callback, EarlyStopping) and callback.monitor.startswith("val/"):
                self.trainer.callbacks.remove(callback)
                rank_zero_warn(f"{reason}: early stopping on {callback.monitor} is turned off.")
            if isinstance(callback, BestModelCheckpoint):
                # No score to keep a best checkpoint by: last.ckpt only, and the final weights exported,
                # without Lightning's warning at every epoch that the monitored metric is missing.
                callback.save_top_k = 0
        # Nothing to validate on: no empty validation loop, and no warning about its zero batches.
        self.trainer.limit_val_batches = 0

    def parse_arguments(self, parser, args) -> None:
        # Remember the command line: options typed there must win over a checkpoint's hyperparameters.
        self._command_line = list(args) if isinstance(args, (list, tuple)) else sys.argv[1:]
        super().parse_arguments(parser, args)
        if subcommand := self.config.get("subcommand"):
            self._prepare_checkpoint(self.config[subcommand])

    _typed_model_options: dict = {}

    def _prepare_checkpoint(self, config) -> None:
        """Resolve ``--ckpt_path``, check its file and task class, and remember the model options typed for
        this command: LightningCLI next rebuilds the model from the checkpoint's saved hyperparameters, which
        would override them (``predict --model.init_args.write_nbest true``); `before_instantiate_classes`
        puts them back."""
        self._resolve_checkpoint_path(config)
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in (None, "best", "hpc") or str(ckpt_path).startswith(("http://", "https://")):
            return
        # One sentence for a missing, corrupt or unsafe file, before Lightning reads it.
        checkpoint = load_checkpoint_file(ckpt_path)
        hparams = checkpoint.get("hyper_parameters") or {}
        check_checkpoint_class(
            hparams.get("_class_path"), config.get("model.class_path"), ckpt_path, self._command_line
        )
        if self.config.subcommand != "fit":
            take_checkpoint_labels(config, hparams)
        # The whole init argument: `--model.init_args.model_config.hidden_size 64` types model_config.
        typed = [
            ".".join(argument.split("=", 1)[0].removeprefix("--").split(".")[:3])
            for argument in self._command_line
            if argument.startswith("--model.init_args.")
        ]
        self._typed_model_options = {key: copy.deepcopy(config.get(key)) for key in typed}
        if self.config.subcommand in EVALUATION_FOLDERS:
            lora = bool(config.get("model.init_args.peft") or hparams.get("peft"))
            self._checkpoint_architecture = None if lora else checkpoint.get("neobert_config")
            if self._checkpoint_architecture is None:  # the pretrained weights are loaded: say why if absent
                check_base_model_present(
                    config.get("model.init_args.pretrained"), lora, self.config.subcommand
                )

    _checkpoint_architecture: dict | None = None

    def instantiate_classes(self) -> None:
        # validate/test/predict restore every weight from the checkpoint: the model is built from the shape it
        # records, not loaded from a pretrained folder that may be gone (LoRA's lacks the frozen backbone).
        with architecture_from_checkpoint(self._checkpoint_architecture):
            super().instantiate_classes()

    _resume_version: int | str | None = None

    def _resolve_checkpoint_path(self, config) -> None:
        """``best`` and ``last`` as paths (`resolve_checkpoint_path`); the run folder ``fit`` continues."""
        self._resume_version = resolve_checkpoint_path(config, self.config.subcommand, self._command_line)

    def instantiate_trainer(self, **kwargs):
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except Exception as error:
            config = self.config[self.subcommand] if self.subcommand else self.config
            refusal = trainer_settings_refusal(error, config.trainer)
            if refusal is None:
                raise
            raise ConfigError(refusal) from error
        use_atomic_checkpoints(trainer)
        run_dir, evaluated = self._run_dir, self._evaluated_run
        if trainer.is_global_zero:
            fresh = not run_dir.exists()
            check_writable(run_dir, new=self._claims_new_folder)
            if fresh:
                FRESH_RUN_FOLDERS.append(run_dir)
        # Predicting a run's checkpoint: its files go straight into <run>/predictions.
        predictions = str(run_dir) if evaluated is not None and self.subcommand == "predict" else None
        trainer.callbacks.extend([RunDirectory(str(run_dir), predictions), ResultTable()])
        trainer.callbacks.extend([MemoryFaultPosition(), PartialEvaluationWarning()])
        trainer.callbacks.append(StopOnInterrupt())
        if self.subcommand == "fit":
            trainer.callbacks.append(ValidateFinalStep())
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.dirpath is None:
            # The evaluated run's own folder, as its checkpoint recorded it, wherever the results go:
            # Lightning drops the restored best score (with a warning) when the folder differs.
            checkpoint.dirpath = str((self._checkpoint_run or run_dir) / "checkpoints")
        return trainer


def add_csv_logger(trainer, root: str) -> bool:
    """Append a CSV logger to the trainer's own list of loggers that has none (a tracker with TensorBoard,
    say): every run folder keeps its metrics.csv, which the analysis helpers and `validate` read."""
    if trainer.logger is False:
        return False  # no loggers asked for
    entries = trainer.logger if isinstance(trainer.logger, list) else [trainer.logger]
    paths = [
        entry.get("class_path") if isinstance(entry, dict) else getattr(entry, "class_path", "")
        for entry in entries
    ]
    if any(str(path).endswith("CSVLogger") for path in paths):
        return False
    csv = {"class_path": LOGGER_CLASSES[1], "init_args": {"save_dir": root, "name": ""}}
    trainer.logger = [*entries, csv]
    return True


# Run folders that this process created (each command's `instantiate_trainer`).
FRESH_RUN_FOLDERS: list[Path] = []


def main(args: list[str] | None = None, run: bool = True) -> NeoBERTCLI:
    """Entry point of ``python -m neobert_tasks`` and of ``neobert-tasks``; ``args`` for use from Python.

    A mistake in the config or the data ends the run with its one-sentence message and exit status 2, a
    write the disk refused with one naming the path and status 74; SIGTERM ends it, after saving
    ``last.ckpt``, with status 143; the first Ctrl-C of a fit the same way, with status 130.
    """
    FRESH_RUN_FOLDERS.clear()
    try:
        return NeoBERTCLI(
            NeoBERTTask,
            TokenizedDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=RunConfigCallback,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"default_root_dir": "runs"},
            parser_kwargs={"parser_mode": "omegaconf", "description": DESCRIPTION, "prog": program_name()},
            parser_class=NeoBERTArgumentParser,
            args=args,
            run=run,
            auto_configure_optimizers=False,
        )
    except SIGTERMException:
        # Pre-empted, or Ctrl-C in a fit (neobert_tasks.interrupt), after saving what a fit can resume from.
        remove_fresh_run_folders()  # stopped before anything was saved: the resume starts in the same folder
        raise SystemExit(report_stop()) from None
    except KeyboardInterrupt:
        # Ctrl-C while the command starts (reading configs, loading a model); inside a fit see
        # neobert_tasks.interrupt. Nothing has trained, so nothing is lost.
        remove_fresh_run_folders()
        print("\nneobert_tasks: interrupted.", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except Exception as error:
        # jsonargparse wraps an error raised while instantiating a class of an optional type (the datamodule
        # of subclass_mode_data) in a ValueError "Does not validate against any of the Union subtypes"; the
        # user's mistake is that ValueError's cause.
        user_error = next((link for link in error_chain(error) if isinstance(link, UserInputError)), None)
        if user_error is None and (refusal := trainer_settings_refusal(error, None)) is not None:
            user_error = ConfigError(refusal)  # refused by Lightning once the Trainer was built
        if user_error is None and (fault := memory_fault(error)) is not None:
            user_error = ConfigError(describe_memory_fault(fault))  # a batch this device cannot hold
        if user_error is None and (storage := storage_fault(error)) is not None:
            cause = describe_storage_fault(storage)
            where = f"'{storage.filename}'" if storage.filename else "to disk"  # a library's write names none
            user_error = StorageError(f"Could not write {where} ({cause}).")
        if user_error is None and (missing := missing_requirement(error)) is not None:
            user_error = ConfigError(missing)  # a tracker's logger without its package
        if user_error is None:
            raise
        remove_fresh_run_folders()
        # One line even when the message quotes a library's multi-line explanation.
        print(f"neobert_tasks: error: {' '.join(str(user_error).split())}", file=sys.stderr)
        raise SystemExit(EX_IOERR if isinstance(user_error, StorageError) else 2) from None


def remove_fresh_run_folders() -> None:
    """A run folder this command created without results would only push the next run to version_N+1."""
    for folder in FRESH_RUN_FOLDERS:
        remove_unused_run_folder(folder)


def program_name() -> str:
    """How the user started the command, for `--help`'s usage line (argparse would say ``__main__.py``)."""
    started_as = Path(sys.argv[0]).name
    return "python -m neobert_tasks" if started_as == "__main__.py" else started_as


def console_main() -> int:
    """The ``neobert-tasks`` console command: ``main`` with exit status 0 once the run has finished.

    (The generated console wrapper passes the return value to ``sys.exit``, which would turn the CLI object
    that ``main`` returns into status 1.)
    """
    main()
    return 0
