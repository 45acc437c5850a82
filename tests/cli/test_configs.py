"""Every YAML file under ``configs/`` parses and builds, alone or with the presets, and carries the paper's
per-task GLUE settings.

A task config is any config outside ``presets/``. The GLUE ones point at the pretrained hub checkpoint,
which cannot be downloaded here, so building them (``main(..., run=False)``: model, datamodule and
trainer, no training) swaps in the tiny preset and the shared tokenizer; self-contained ones such as the
quickstart build as they are, from the repository root. The DDP preset needs GPUs and is only parsed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from lightning.pytorch.callbacks import EarlyStopping

from neobert_tasks.cli import LINKED_ARGUMENTS
from neobert_tasks.data.glue import GLUE_TASKS
from tests.cli.helpers import CONFIGS, TINY, build_cli, glue_args, run_cli
from tests.conftest import REPO_ROOT, shared_path

pytestmark = pytest.mark.slow  # runs the command line end to end

PRESETS = sorted((CONFIGS / "presets").glob("*.yaml"))
# configs/suite/ holds the GLUE suite's hyperparameter grids, not CLI configs (tests/suite parses them).
SUITE_GRIDS = set((CONFIGS / "suite").glob("*.yaml"))
TASK_CONFIGS = sorted(set(CONFIGS.rglob("*.yaml")) - set(PRESETS) - SUITE_GRIDS)
GLUE_CONFIGS = sorted([CONFIGS / "glue.yaml", *(CONFIGS / "glue").glob("*.yaml")])
# Presets that cannot be instantiated on a machine without GPUs: parsed only.
GPU_PRESETS = ("ddp", "ddp_multinode", "fsdp")
# Top-level keys of the printed ``fit`` config that only a subcommand accepts.
FIT_ONLY_KEYS = ("ckpt_path", "weights_only")

# NeoBERT paper (arXiv 2502.19587), best GLUE setting per task: batch size, learning rate, weight decay.
# It reports none for WNLI, whose config uses RTE's.
PAPER_SETTINGS = {
    "cola": (8, 8e-6, 1e-5),
    "mnli": (16, 5e-6, 1e-5),
    "mrpc": (2, 1e-5, 1e-5),
    "qnli": (8, 5e-6, 1e-5),
    "qqp": (32, 8e-6, 1e-5),
    "rte": (32, 5e-6, 1e-5),
    "sst2": (32, 8e-6, 1e-2),
    "stsb": (32, 2e-5, 1e-5),
}
PAPER_SETTINGS["wnli"] = PAPER_SETTINGS["rte"]


def config_id(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


def printed_text(capsys, *args: str) -> str:
    """What ``fit ... --print_config`` prints; printing ends the command with status 0."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        build_cli("fit", *args, "--print_config")
    assert exit_info.value.code in (0, None)
    return capsys.readouterr().out


def print_config(capsys, *args: str) -> dict:
    """The config ``fit ... --print_config`` prints, parsed."""
    return yaml.safe_load(printed_text(capsys, *args))


def tiny_args() -> list[str]:
    """The tiny preset and the shared tokenizer: what it takes to build a task config without the hub."""
    return [
        "--config",
        str(TINY),
        "--data.init_args.tokenizer",
        str(shared_path("tokenizers", "bert-base-uncased")),
    ]


def all_keys(node) -> set[str]:
    """Every mapping key at any depth of a parsed YAML document."""
    if isinstance(node, dict):
        return set(node) | set().union(*(all_keys(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(all_keys(value) for value in node))
    return set()


# Configs whose hub dataset is replaced by its copy under ../shared when they are built here.
SHARED_DATA = {
    "conll2003.yaml": ("data", "conll2003"),
    "squad.yaml": ("data", "squad"),
    "squad_v2.yaml": ("data", "squad_v2"),
    "long_document.yaml": ("data", "hyperpartisan_news_detection", "byarticle"),
    "mlm.yaml": ("data", "squad"),  # its contexts stand in for a text corpus (see build_args)
}


def build_args(config: Path) -> list[str]:
    """What it takes to build a task config here: the tiny model instead of the hub's, local data."""
    if config in GLUE_CONFIGS:
        return tiny_args()
    if config.parent.name == "embeddings":  # their data and evaluation sets are ../shared paths already
        shared_path("data")
        return tiny_args()
    if config.name in SHARED_DATA:
        arguments = [*tiny_args(), "--data.init_args.data_dir", str(shared_path(*SHARED_DATA[config.name]))]
        if config.name == "mlm.yaml":  # raw text: SQuAD's contexts stand in for a text corpus
            arguments += ["--data.init_args.dataset", "null", "--data.init_args.text_column", "context"]
        return arguments
    return []


def test_one_glue_config_per_task():
    assert {path.stem for path in (CONFIGS / "glue").glob("*.yaml")} == set(GLUE_TASKS)


@pytest.mark.parametrize("config", TASK_CONFIGS, ids=config_id)
def test_task_config_prints_alone(config, capsys):
    printed = print_config(capsys, "--config", str(config))
    assert printed["model"]["class_path"].startswith("neobert_tasks.tasks.")
    assert printed["data"]["class_path"].startswith("neobert_tasks.data.")
    if config in GLUE_CONFIGS:
        assert printed["data"]["class_path"] == "neobert_tasks.data.GLUEDataModule"
        assert printed["data"]["init_args"]["task_name"] in GLUE_TASKS


@pytest.mark.parametrize("config", TASK_CONFIGS, ids=config_id)
def test_task_config_builds_from_its_printed_config(config, capsys, tmp_path, monkeypatch):
    """The printed config is complete: given back with ``--config`` it parses to itself, and it builds a
    model whose label settings are linked from the datamodule."""
    monkeypatch.chdir(REPO_ROOT)  # configs name data and tokenizer paths relative to the repository root
    text = printed_text(capsys, "--config", str(config), *build_args(config))
    saved = tmp_path / "printed.yaml"
    saved.write_text(text)
    assert print_config(capsys, "--config", str(saved)) == yaml.safe_load(text)
    # Building without a subcommand takes the config minus the keys only ``fit`` has.
    document = yaml.safe_load(text)
    for fit_only in FIT_ONLY_KEYS:
        document.pop(fit_only, None)
    built = tmp_path / "built.yaml"
    built.write_text(yaml.safe_dump(document, sort_keys=False))
    cli = build_cli("--config", str(built), "--trainer.default_root_dir", str(tmp_path), run=False)

    datamodule, model = cli.datamodule, cli.model
    for source, target in LINKED_ARGUMENTS:  # what a task lacks (SQuAD has no labels) is None on both sides
        assert getattr(model, target, None) == getattr(datamodule, source, None), target
    raw = yaml.safe_load(config.read_text())
    assert datamodule.batch_size == raw["data"]["init_args"]["batch_size"]
    # The task's rate, unless the tiny preset composed here (a from-scratch model) sets its own.
    uses_tiny = str(TINY) in build_args(config)
    rate = yaml.safe_load(TINY.read_text())["model"]["init_args"]["learning_rate"] if uses_tiny else None
    assert model.hparams.learning_rate == (rate or raw["model"]["init_args"]["learning_rate"])
    assert model.hparams.weight_decay == raw["model"]["init_args"]["weight_decay"]
    if config not in GLUE_CONFIGS:
        return
    assert model.model.config.hidden_size == 64  # the tiny preset replaced the hub checkpoint
    task = GLUE_TASKS[datamodule.task_name]
    assert (model.num_labels, model.problem_type, model.task_name) == (
        task.num_labels,
        task.problem_type,
        task.name,
    )
    if config.parent.name == "glue":
        # Early stopping and the best checkpoint must watch the same metric: the task's main one.
        stoppers = [callback for callback in cli.trainer.callbacks if isinstance(callback, EarlyStopping)]
        assert [(stopper.monitor, stopper.mode) for stopper in stoppers] == [
            (f"val/{task.main_metric}", "max")
        ]


@pytest.mark.parametrize("task", sorted(PAPER_SETTINGS))
def test_glue_config_has_paper_settings(task):
    batch_size, learning_rate, weight_decay = PAPER_SETTINGS[task]
    raw = yaml.safe_load((CONFIGS / "glue" / f"{task}.yaml").read_text())
    assert raw["data"]["init_args"]["task_name"] == task
    assert raw["data"]["init_args"]["batch_size"] == batch_size
    assert raw["model"]["init_args"]["learning_rate"] == pytest.approx(learning_rate, rel=1e-9)
    assert raw["model"]["init_args"]["weight_decay"] == pytest.approx(weight_decay, rel=1e-9)


@pytest.mark.parametrize("config", TASK_CONFIGS + PRESETS, ids=config_id)
def test_no_config_sets_linked_arguments(config):
    """``num_labels`` and the other linked values come from the datamodule; a config setting them fails."""
    document = yaml.safe_load(config.read_text()) or {}
    assert "num_labels" not in all_keys(document)
    model_arguments = (document.get("model") or {}).get("init_args") or {}
    assert not {target for _, target in LINKED_ARGUMENTS} & set(model_arguments)


@pytest.mark.parametrize("preset", PRESETS, ids=config_id)
def test_preset_combines_with_task_config(preset, capsys, tmp_path):
    printed = print_config(capsys, "--config", str(CONFIGS / "glue" / "rte.yaml"), "--config", str(preset))
    preset_values = yaml.safe_load(preset.read_text())
    for section in ("trainer", "data", "model"):
        for key, value in (preset_values.get(section) or {}).items():
            if key == "init_args":
                for name, argument in value.items():
                    assert printed[section]["init_args"][name] == argument, f"{section}.init_args.{name}"
            elif isinstance(value, dict):  # a class: the printed one adds the defaults of its init_args
                assert printed[section][key]["class_path"] == value["class_path"], f"{section}.{key}"
                for name, argument in value.get("init_args", {}).items():
                    assert printed[section][key]["init_args"][name] == argument, f"{section}.{key}.{name}"
            else:
                assert printed[section][key] == value, f"{section}.{key}"
    if preset.stem in GPU_PRESETS:
        return
    cli = build_cli(
        "--config", str(CONFIGS / "glue" / "rte.yaml"), *tiny_args(), "--config", str(preset),
        "--trainer.default_root_dir", str(tmp_path), run=False,
    )  # fmt: skip
    assert cli.datamodule.task_name == "rte"


def test_printed_config_fits_as_is(capsys, tmp_path):
    """``fit --config <printed config>`` trains: the saved file is all a rerun needs."""
    text = printed_text(capsys, *glue_args("wnli", tmp_path))
    saved = tmp_path / "printed.yaml"
    saved.write_text(text)
    run_dir = run_cli("fit", "--config", str(saved), tmp_path=tmp_path)
    assert run_dir.parent == tmp_path / "runs"
    assert json.loads((run_dir / "metrics.json").read_text())["monitor"] == "val/accuracy"


def test_fsdp_preset_wraps_each_encoder_block(capsys):
    """Lightning's FSDP needs CUDA, so the strategy is built from the printed config but not run."""
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy

    from neobert_tasks.model.modeling import NeoBERTEncoderBlock

    preset = CONFIGS / "presets" / "fsdp.yaml"
    printed = print_config(capsys, "--config", str(CONFIGS / "glue" / "rte.yaml"), "--config", str(preset))
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=FSDPStrategy)
    strategy = parser.instantiate_classes(parser.parse_object({"strategy": printed["trainer"]["strategy"]}))
    assert isinstance(strategy.strategy, FSDPStrategy)
    assert strategy.strategy.kwargs["auto_wrap_policy"]._module_classes == {NeoBERTEncoderBlock}
