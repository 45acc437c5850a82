"""The export's remote code is generated from the package's model modules, and cannot drift from them.

* Every model module is either in the generated files or declared package-only, so a new module cannot be
  left out; the generated files import nothing of neobert_tasks and define every class ``auto_map`` names.
* The official checkpoint's folder, re-exported (``python -m neobert_tasks.export``), keeps its tensor names
  key for key, and its ``auto_map`` now names the export's own files instead of the official remote code.
* The console command ``neobert-tasks`` ends a successful run with status 0.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from safetensors import safe_open

import neobert_tasks.model
from neobert_tasks.export.__main__ import main as export_main
from neobert_tasks.export.remote_code import (
    AUTO_MAP,
    PACKAGE_ONLY_MODULES,
    REMOTE_CODE_FILES,
    remote_code_source,
)
from neobert_tasks.model import NeoBERTConfig
from tests.cli.helpers import DEBUG, quickstart_args
from tests.model.official import write_official_checkpoint

MODEL_PACKAGE = Path(neobert_tasks.model.__file__).parent


def test_every_model_module_is_generated_or_declared_package_only():
    modules = {path.stem for path in MODEL_PACKAGE.glob("*.py") if path.stem != "__init__"}
    generated = {module for modules in REMOTE_CODE_FILES.values() for module in modules}
    assert modules == generated | set(PACKAGE_ONLY_MODULES)


@pytest.mark.parametrize("file_name", list(REMOTE_CODE_FILES))
def test_generated_files_stand_alone(file_name):
    source = remote_code_source(file_name)
    tree = ast.parse(source)  # valid Python
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    roots = {name.split(".")[0] for name in imported if name}
    assert "neobert_tasks" not in roots
    # torch and transformers only (plus the standard library and flash-attn, imported on use).
    assert roots - {"torch", "transformers", "flash_attn", "configuration_neobert"} <= {
        "__future__", "collections", "dataclasses", "functools", "importlib", "math",
    }  # fmt: skip
    # Every function and class of the package's modules is in the file as is: generated, not rewritten.
    for module in REMOTE_CODE_FILES[file_name]:
        module_source = (MODEL_PACKAGE / f"{module}.py").read_text()
        for node in ast.parse(module_source).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert ast.get_source_segment(module_source, node) in source, f"{module}.py: {node.name}"


def test_auto_map_names_classes_that_the_generated_files_define():
    defined = {
        file_name.removesuffix(".py"): {
            node.name
            for node in ast.parse(remote_code_source(file_name)).body
            if isinstance(node, ast.ClassDef)
        }
        for file_name in REMOTE_CODE_FILES
    }
    for reference in AUTO_MAP.values():
        module, name = reference.split(".")
        assert name in defined[module], reference


@pytest.mark.slow
def test_official_folder_reexports_with_its_tensor_names(tmp_path):
    official = tmp_path / "official"
    state = write_official_checkpoint(official, hidden_size=64, num_attention_heads=4, num_hidden_layers=2,
                                      intermediate_size=96, vocab_size=1000)  # fmt: skip
    assert export_main([str(official), "--output", str(tmp_path / "export")]) == 0
    with safe_open(tmp_path / "export" / "model.safetensors", "pt") as saved:
        assert set(saved.keys()) == set(state)  # the official names: model.*, decoder.*
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["auto_map"] == AUTO_MAP and config["architectures"] == ["NeoBERTForMaskedLM"]
    assert NeoBERTConfig.from_pretrained(official).to_dict().get("auto_map") is None  # the official one goes
    for name in ("configuration_neobert.py", "modeling_neobert.py", "modules.json", "1_Pooling/config.json"):
        assert (tmp_path / "export" / name).is_file(), name


def test_export_command_refuses_a_folder_without_a_model(tmp_path, capsys):
    assert export_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"neobert_tasks.export: error: '{tmp_path}' is not a model folder: it has no config.json."
    )


def test_export_command_names_a_wrong_path_and_its_likely_meaning(tmp_path, capsys):
    """A missing folder and config.json itself were both 'not a model folder: it has no config.json';
    a run folder got no hint that its model is in export/; an --output file ended in a traceback."""
    assert export_main([str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"Model folder '{tmp_path / 'nope'}' does not exist.")
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "config.json").write_text("{}")
    assert export_main([str(tmp_path / "run" / "export" / "config.json")]) == 2
    assert "is a file; give the model folder that holds it" in capsys.readouterr().err
    assert export_main([str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.strip().endswith(f"the run's model is in '{tmp_path / 'run' / 'export'}'.")
    (tmp_path / "notes.txt").write_text("x")
    assert export_main([str(tmp_path / "run" / "export"), "--output", str(tmp_path / "notes.txt")]) == 2
    assert "--output" in capsys.readouterr().err


def test_export_command_points_a_checkpoint_to_validate(tmp_path, capsys):
    """A run's .ckpt is not a model folder; the message gives the command that exports it."""
    checkpoint = tmp_path / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    (tmp_path / "version_0" / "config.yaml").write_text("seed_everything: 0\n")
    assert export_main([str(checkpoint)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"neobert_tasks.export: error: '{checkpoint}' is a training checkpoint, not a model folder: export it"
        f" with python -m neobert_tasks validate --config {tmp_path / 'version_0' / 'config.yaml'}"
        f" --ckpt_path {checkpoint} --export.after_validate true."
    )


def test_export_command_refuses_pickle_only_weights(tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert export_main([str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"neobert_tasks.export: error: '{tmp_path}' has no model.safetensors;"
        " convert pickle weights once with"
        ' python -c "from neobert_tasks.model.loading import convert_pickle_weights;'
        f" convert_pickle_weights('{tmp_path}')\" if you trust them."
    )


@pytest.mark.slow
def test_console_command_exits_with_status_0(tmp_path):
    command = shutil.which("neobert-tasks")
    if command is None:
        pytest.skip("the neobert-tasks console command is not installed (pip install -e .)")
    arguments = [*quickstart_args(tmp_path), "--config", DEBUG, "--trainer.limit_val_batches", "1"]
    completed = subprocess.run(
        [command, "validate", *map(str, arguments), "--trainer.default_root_dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]


@pytest.mark.parametrize("length", [0, 100_000])
def test_export_command_refuses_a_max_seq_length_the_model_cannot_take(length, tmp_path, capsys):
    """0 was ignored and 100,000 written into sentence_bert_config.json, for a model of max_length 64."""
    from neobert_tasks.model import NeoBERTModel  # noqa: PLC0415
    from tests.conftest import tiny_config_kwargs  # noqa: PLC0415

    NeoBERTModel(NeoBERTConfig(**{**tiny_config_kwargs(), "max_length": 64})).save_pretrained(tmp_path / "m")
    assert export_main([str(tmp_path / "m"), "--max_seq_length", str(length)]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(f"--max_seq_length must be in [1, 64] (the model's max_length), got {length}.")
    )


def test_a_reexport_keeps_the_folders_sentence_transformers_settings(tmp_path, capfd):
    """It dropped an embedding model's query prompt, set pooling back to mean and raised max_seq_length to
    the model's max_length: encode_query and long inputs then embedded otherwise than the run scored."""
    from neobert_tasks.export.folder import export_model_folder  # noqa: PLC0415
    from neobert_tasks.model import NeoBERTModel  # noqa: PLC0415
    from tests.conftest import tiny_config_kwargs  # noqa: PLC0415

    model = NeoBERTModel(NeoBERTConfig(**{**tiny_config_kwargs(), "max_length": 64}))
    export_model_folder(model, tmp_path / "run", pooling="cls", normalize=True, prompts={"query": "query: "},
                        max_seq_length=32)  # fmt: skip
    files = ["config_sentence_transformers.json", "sentence_bert_config.json", "1_Pooling/config.json",
             "modules.json"]  # fmt: skip
    expected = {name: (tmp_path / "run" / name).read_text() for name in files}
    # The weights are readable by whoever may read the rest (transformers 5 wrote them 0600).
    plain = (tmp_path / "run" / "config.json").stat().st_mode
    assert {path.name: path.stat().st_mode for path in (tmp_path / "run").glob("*.safetensors")} == {
        "model.safetensors": plain
    }
    capfd.readouterr()
    assert export_main([str(tmp_path / "run"), "--output", str(tmp_path / "again")]) == 0
    assert "Loading weights" not in capfd.readouterr().err  # no progress bar for reading one local file
    assert {name: (tmp_path / "again" / name).read_text() for name in files} == expected
    assert export_main([str(tmp_path / "run")]) == 0  # in place
    assert {name: (tmp_path / "run" / name).read_text() for name in files} == expected
    # The command line still wins.
    assert export_main([str(tmp_path / "run"), "--pooling", "mean", "--max_seq_length", "48"]) == 0
    assert json.loads((tmp_path / "run" / "sentence_bert_config.json").read_text())["max_seq_length"] == 48
    assert json.loads((tmp_path / "run" / "1_Pooling" / "config.json").read_text())[
        "pooling_mode_mean_tokens"
    ]
