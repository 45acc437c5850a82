"""``--ckpt_path best`` and ``--ckpt_path last`` as checkpoint files, before Lightning reads them.

Lightning's ``best`` means the fit of the same process and it has no ``last``; here they name a run's files:
* with a run's own ``config.yaml`` (``--config runs/x/version_3/config.yaml``), that run's best
  checkpoint (its ``metrics.json`` names it) or its ``last.ckpt``, whatever newer runs lie beside it;
* otherwise, under ``trainer.default_root_dir``, the best checkpoint of the newest finished run, or the
  newest ``last.ckpt``.

``fit --ckpt_path last`` continues the folder of the run it resumes, and starts from scratch, with a
warning, where there is no ``last.ckpt`` yet (a job script may pass it on its first start). ``validate``,
``test`` and ``predict`` refuse to go on without a checkpoint: a random model's scores would pass for a
result.

`take_checkpoint_labels` gives ``validate``, ``test`` and ``predict`` the checkpoint's labels where their
data cannot say them.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from neobert_tasks.errors import ConfigError, MissingPathError
from neobert_tasks.model.loading import is_local_path
from neobert_tasks.resume import latest_run_checkpoint
from neobert_tasks.run_directory import (
    best_checkpoint_of_run,
    best_run_checkpoint,
    last_checkpoint_of_run,
    run_of_config,
)


def resolve_checkpoint_path(config: Any, subcommand: str, command_line: list[str]) -> int | str | None:
    """Replace ``config.ckpt_path`` ``best`` or ``last`` by a checkpoint's path (None: start from scratch);
    return the version of the run folder a ``fit`` resumes into, if any."""
    ckpt_path, fits = config.get("ckpt_path"), subcommand == "fit"
    if ckpt_path == "best" and fits:  # Lightning's own "best" is of a fit earlier in the same process
        raise ConfigError(
            "fit --ckpt_path best: a fit resumes from its last.ckpt (--ckpt_path last); to train on from"
            " a run's best weights, start a new run from its export (--model.init_args.pretrained"
            " <run>/export)."
        )
    if ckpt_path == "last" or (ckpt_path == "best" and not fits):
        run = run_of_config(command_line)
        if run is not None:
            typed_root = any(argument.startswith("--trainer.default_root_dir") for argument in command_line)
            return resolve_in_run(config, subcommand, run, typed_root)
    root = str(Path(config.trainer.default_root_dir or "runs").expanduser())
    if ckpt_path == "best" and not fits:
        best = best_run_checkpoint(root)
        if best is None:
            raise MissingPathError(
                f"--ckpt_path best: no finished run (metrics.json naming a best checkpoint) under"
                f" '{root}/version_*'; run fit first, or give --ckpt_path last (a run without validation"
                " keeps no best checkpoint) or the path of a checkpoint."
            )
        config.ckpt_path = str(best)
    elif ckpt_path == "last":
        found = latest_run_checkpoint(root)
        if found is None:
            return no_last_checkpoint(config, subcommand, f"under '{root}/version_*/checkpoints'")
        path, version = found
        config.ckpt_path = str(path)
        if not fits:
            return None  # validate/predict write a folder of their own
        rank_zero_info(f"Resuming from {path}")
        return version
    return None


def resolve_in_run(config: Any, subcommand: str, run: Path, typed_root: bool = False) -> int | str | None:
    """``best`` or ``last`` of the run whose ``config.yaml`` was given; the run's version for ``fit``, which
    goes on in that folder wherever the run was moved (unless ``typed_root``: a root given on the command
    line starts a new run there)."""
    which = config.get("ckpt_path")
    found = best_checkpoint_of_run(run) if which == "best" else last_checkpoint_of_run(run)
    if found is None and which == "best":
        raise MissingPathError(
            f"--ckpt_path best: run '{run}' names no best checkpoint in its metrics.json (it had no"
            " validation score, or has not finished); give --ckpt_path last or the path of a checkpoint."
        )
    if found is None:
        return no_last_checkpoint(config, subcommand, f"in '{run / 'checkpoints'}'")
    config.ckpt_path = str(found)
    if subcommand != "fit":
        return None
    rank_zero_info(f"Resuming from {found}")
    version = re.fullmatch(r"version_(\d+)", run.name)
    root = Path(config.trainer.default_root_dir or "runs").expanduser().resolve()
    if run.parent != root and not typed_root:
        # The folder was moved or renamed, or its recorded root is relative to another working directory:
        # the recorded root would resume into a new folder there, beside none of this run's files.
        config.trainer.default_root_dir, root = str(run.parent), run.parent
    if run.parent != root:
        return None
    return int(version.group(1)) if version else run.name  # a named folder (seed_0, a rename) by its name


def no_last_checkpoint(config: Any, subcommand: str, where: str) -> None:
    """``fit`` starts from scratch with a warning; the other commands refuse in one sentence."""
    if subcommand != "fit":
        raise MissingPathError(
            f"--ckpt_path last: no last.ckpt {where} to {subcommand}; run fit first or give the path of a"
            " checkpoint."
        )
    rank_zero_warn(f"No last.ckpt {where}: starting from scratch.")
    config.ckpt_path = None


def take_checkpoint_labels(config: Any, hparams: dict[str, Any]) -> None:
    """Set the data's label options that are not typed to the checkpoint's (``hparams``) where the command's
    data has no training split to infer them from: a predict_file, or a folder of test data only. (With
    one, the data's labels are read and checked against the checkpoint's.)"""
    if not lacks_training_data(config):
        return
    for key in ("problem_type", "num_labels", "label_names"):
        name = f"data.init_args.{key}"
        if name in config and config.get(name) is None and hparams.get(key) is not None:
            config[name] = copy.deepcopy(hparams[key])


def lacks_training_data(config) -> bool:
    """Whether a command's data has nothing to infer labels from: a predict_file, or a data_dir without
    files of its training split."""
    if config.get("data.init_args.predict_file"):
        return True
    data_dir = config.get("data.init_args.data_dir")
    split = config.get("data.init_args.train_split") or "train"
    return bool(data_dir) and Path(data_dir).is_dir() and not any(Path(data_dir).glob(f"{split}[.-]*"))


def check_base_model_present(pretrained: str | None, lora: bool, subcommand: str) -> None:
    """Refuse, saying why it is needed, a local ``pretrained`` folder that is gone when ``subcommand``
    must load its weights: a LoRA checkpoint holds the adapters and head only, and one written before
    checkpoints recorded the model's shape (``neobert_config``) cannot be built without it."""
    if pretrained is None or not is_local_path(pretrained) or Path(pretrained).expanduser().is_dir():
        return
    why = (
        "its checkpoint holds the LoRA adapters and the head only"
        if lora
        else "its checkpoint predates the record of the model's shape that lets evaluations do without it"
    )
    raise MissingPathError(
        f"model.init_args.pretrained: the checkpoint directory {pretrained!r} does not exist, and"
        f" {subcommand} needs its weights: {why}; restore the folder or give its new place with"
        " --model.init_args.pretrained."
    )
