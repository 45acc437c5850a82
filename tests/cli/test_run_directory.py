"""`pin_logger_versions`: the TensorBoard and CSV loggers writing under the run root share one version folder.

The command line writes the version into their config before Lightning builds them (a logger's version has
no public setter), and takes it out again once they are built, so that ``config.yaml`` runs again into a
run folder of its own.
"""

from __future__ import annotations

from jsonargparse import Namespace

from neobert_tasks.run_directory import pin_logger_versions

TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"
CSV = "lightning.pytorch.loggers.CSVLogger"


def logger(class_path: str, save_dir: str, **init_args) -> Namespace:
    return Namespace(class_path=class_path, init_args=Namespace(save_dir=save_dir, **init_args))


def test_loggers_under_the_root_get_the_run_version(tmp_path):
    loggers = [logger(TENSORBOARD, str(tmp_path), name="", version=None), logger(CSV, str(tmp_path), name="")]
    version, pinned = pin_logger_versions(loggers, tmp_path, 3)
    assert version == 3 and [entry.init_args.version for entry in loggers] == [3, 3]
    assert pinned == [entry.init_args for entry in loggers]


def test_a_version_given_to_one_logger_names_the_folder(tmp_path):
    loggers = [
        {
            "class_path": TENSORBOARD,
            "init_args": {"save_dir": str(tmp_path), "name": "", "version": "seed_1"},
        },
        {"class_path": CSV, "init_args": {"save_dir": str(tmp_path), "name": ""}},
    ]
    version, pinned = pin_logger_versions(loggers, tmp_path, 0)
    assert version == "seed_1" and loggers[1]["init_args"]["version"] == "seed_1"
    assert pinned == [loggers[1]["init_args"]]  # the given one stays as configured


def test_other_loggers_and_folders_are_left_alone(tmp_path):
    elsewhere = logger(TENSORBOARD, str(tmp_path / "other"), name="")
    named = logger(CSV, str(tmp_path))  # no name: lightning_logs under the root, not the root
    wandb = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=Namespace(version=None))
    version, pinned = pin_logger_versions([elsewhere, named, wandb, False], tmp_path, 5)
    assert version == 5 and pinned == []
    assert "version" not in elsewhere.init_args and wandb.init_args.version is None


def test_a_single_logger(tmp_path):
    single = logger(CSV, str(tmp_path), name="", version=None)
    assert pin_logger_versions(single, tmp_path, 2)[0] == 2 and single.init_args.version == 2
