"""Mistakes in the config, the model or a checkpoint end a command with one sentence and exit status 2.

Each test runs ``main`` in-process on the quickstart (tiny model, sample data and tokenizer shipped with
the repository, so these tests need nothing outside it, except two GLUE ones that use the shared GLUE copy
and skip without it), checks the message, that no traceback was printed and that no ``metrics.json`` or
``export/`` was written (`command_error`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import lightning
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from neobert_tasks.argument_parser import NEGATIVE_NUMBER
from neobert_tasks.model import NeoBERTForSequenceClassification
from neobert_tasks.model.configuration import NeoBERTConfig
from neobert_tasks.tasks import TokenClassificationTask
from tests.cli.helpers import QUICKSTART, build_cli, command_error, glue_args, quickstart_args, run_cli
from tests.conftest import REPO_ROOT, tiny_config_kwargs

pytestmark = pytest.mark.slow  # runs the command line end to end

TOKENIZER = REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased"


def quickstart_error(capsys, tmp_path: Path, *overrides: str, subcommand: str = "fit") -> str:
    return command_error(capsys, subcommand, *quickstart_args(tmp_path), *overrides, tmp_path=tmp_path)


@pytest.mark.parametrize(
    ("option", "value", "closest"),
    [
        ("model.init_args.learning_rat", "1e-3", "model.init_args.learning_rate"),
        ("trainer.max_epoch", "3", "trainer.max_epochs"),
        ("data.init_args.text_colum", "sentence", "data.init_args.text_column"),
        ("checkpoint.monitr", "val/loss", "checkpoint.monitor"),
    ],
)
def test_unknown_key_on_the_command_line(capsys, tmp_path, option, value, closest):
    message = quickstart_error(capsys, tmp_path, f"--{option}", value)
    assert message == f"Unknown key '{option}' on the command line; did you mean '{closest}'?"


@pytest.mark.parametrize(
    ("text", "key", "closest"),
    [
        ("trainer:\n  max_epoch: 3\n", "trainer.max_epoch", "trainer.max_epochs"),
        (
            "data:\n  init_args:\n    max_lenght: 64\n",
            "data.init_args.max_lenght",
            "data.init_args.max_length",
        ),
        (
            "model:\n  init_args:\n    weight_decy: 0.1\n",
            "model.init_args.weight_decy",
            "model.init_args.weight_decay",
        ),
    ],
)
def test_unknown_key_in_a_config_file(capsys, tmp_path, text, key, closest):
    config = tmp_path / "mine.yaml"
    config.write_text(text)
    message = quickstart_error(capsys, tmp_path, "--config", str(config))
    assert message == f"Unknown key '{key}' in config file '{config}'; did you mean '{closest}'?"


@pytest.mark.parametrize(
    ("option", "value", "expected"),
    [
        ("trainer.max_epochs", "abc", "expected int or None"),
        ("model.init_args.learning_rate", "fast", "expected float"),
        ("data.init_args.empty_texts", "maybe", "expected one of 'skip', 'error'"),
        # The export tool takes `--formats onnx`; the CLI's list option needs brackets.
        ("export.formats", "onnx", "expected list or None; a list is written in brackets, '[onnx]'"),
    ],
)
def test_value_of_the_wrong_type(capsys, tmp_path, option, value, expected):
    message = quickstart_error(capsys, tmp_path, f"--{option}", value)
    assert message == f"Invalid value '{value}' for '{option}' on the command line: {expected}."


def test_yaml_syntax_error_names_the_file_and_line(capsys, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("trainer:\n  max_epochs: 3\n   devices: 1\n")
    message = quickstart_error(capsys, tmp_path, "--config", str(config))
    assert message.startswith(f"Config file '{config}' is not valid YAML: ")
    assert "at line 3, column 11" in message


def test_config_file_that_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "no_such_config.yaml"
    message = quickstart_error(capsys, tmp_path, "--config", str(missing))
    assert message == f"Config file '{missing}' does not exist."


def test_model_config_field_that_does_not_exist(capsys, tmp_path):
    message = quickstart_error(capsys, tmp_path, "--model.init_args.model_config.hiden_size", "32")
    assert message == (
        "model.init_args.model_config has a field 'hiden_size' that NeoBERTConfig does not know; did you mean"
        " 'hidden_size'?"
    )


def test_help_and_print_config_still_work(capsys, tmp_path):
    for flag in ("--help", "--print_config"):
        with pytest.raises(SystemExit) as exit_info:
            build_cli("fit", *quickstart_args(tmp_path), flag)
        assert exit_info.value.code in (0, None)
        assert capsys.readouterr().out


def test_help_names_the_command_as_typed_and_says_what_it_is_for():
    """LightningCLI's help began "usage: __main__.py" and "Lightning Trainer command line tool"."""
    completed = subprocess.run(
        [sys.executable, "-m", "neobert_tasks", "--help"], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-2000:]
    usage, _, description = completed.stdout.partition("\n\n")
    assert usage.startswith("usage: python -m neobert_tasks ")
    assert " ".join(description.split()).startswith(
        "Fine-tune NeoBERT on a task from YAML configs, e.g. `fit --config configs/glue/sst2.yaml`"
    )


def test_tokenizer_larger_than_the_model_vocabulary(capsys, tmp_path):
    message = quickstart_error(capsys, tmp_path, "--model.init_args.model_config.vocab_size", "1000")
    assert message.startswith(
        f"The tokenizer '{TOKENIZER}' has 30522 tokens but the model of model.init_args.model_config has a"
        " vocabulary of 1000"
    )


def test_tokenizer_larger_than_the_vocabulary_of_a_pretrained_model(capsys, tmp_path):
    pretrained = tmp_path / "small_vocabulary"
    config = NeoBERTConfig(
        vocab_size=1000, hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=96
    )
    NeoBERTForSequenceClassification(config).save_pretrained(pretrained)
    message = quickstart_error(
        capsys, tmp_path / "run", "--model.init_args.pretrained", str(pretrained),
        "--model.init_args.model_config", "null",
    )  # fmt: skip
    assert f"has 30522 tokens but the model '{pretrained}' has a vocabulary of 1000" in message


def test_data_longer_than_the_model_accepts(capsys, tmp_path):
    message = quickstart_error(capsys, tmp_path, "--data.init_args.max_length", "256")
    assert message.startswith("data.init_args.max_length (256) exceeds the model's max_length (128)")


@pytest.mark.parametrize("subcommand", ["fit", "validate", "predict"])
def test_checkpoint_that_does_not_exist(capsys, tmp_path, subcommand):
    missing = tmp_path / "nope.ckpt"
    message = quickstart_error(capsys, tmp_path, "--ckpt_path", str(missing), subcommand=subcommand)
    assert message == f"Checkpoint '{missing}' does not exist."


def test_pretrained_directory_that_does_not_exist(capsys, tmp_path):
    missing = tmp_path / "no_such_export"
    message = quickstart_error(
        capsys,
        tmp_path,
        "--model.init_args.pretrained",
        str(missing),
        "--model.init_args.model_config",
        "null",
    )
    assert message == f"model.init_args.pretrained: the checkpoint directory '{missing}' does not exist."


def test_checkpoint_trained_with_another_number_of_labels(capsys, tmp_path):
    quick = ["--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
    run_dir = run_cli("fit", *quickstart_args(tmp_path / "fit"), *quick, tmp_path=tmp_path / "fit")
    checkpoint = run_dir / "checkpoints" / "last.ckpt"

    def validate_on(name: str, labels: list[str]) -> str:
        """The refusal of validating the checkpoint on a folder of one sentence per label."""
        data = tmp_path / name
        data.mkdir()
        rows = pd.DataFrame({"sentence": ["good", "fine", "bad"][: len(labels)], "label": labels})
        for split in ("train", "validation"):
            rows.to_csv(data / f"{split}.csv", index=False)
        return command_error(
            capsys, "validate", *quickstart_args(tmp_path / f"{name}_run"), "--data.init_args.data_dir",
            str(data), "--ckpt_path", str(checkpoint), tmp_path=tmp_path / f"{name}_run",
        )  # fmt: skip

    message = validate_on("three_classes", ["positive", "neutral", "negative"])
    assert message.startswith(f"Checkpoint '{checkpoint}' was trained with num_labels 2 but the data has 3")
    # As many labels under other names (or in another order): their ids were read as the checkpoint's.
    message = validate_on("other_names", ["positive", "awful"])
    assert message == (
        f"Checkpoint '{checkpoint}' was trained with label_names ['negative', 'positive'] but the data's are"
        " ['awful', 'positive'], so its class ids would name other labels; use a checkpoint trained on these"
        " labels, or data with the checkpoint's."
    )
    message = command_error(
        capsys, "validate", *quickstart_args(tmp_path / "reordered"), "--ckpt_path", str(checkpoint),
        "--data.init_args.label_names", "[positive, negative]", tmp_path=tmp_path / "reordered",
    )  # fmt: skip
    assert message.endswith("set data.init_args.label_names to the checkpoint's, in its order.")


def test_test_of_a_split_without_labels_says_to_predict(capsys, tmp_path):
    """A test split without its label column (kept for predict) ended `test` in a KeyError traceback."""
    data = tmp_path / "data"
    data.mkdir()
    labelled = pd.DataFrame({"sentence": ["good", "bad"] * 8, "label": ["positive", "negative"] * 8})
    for split in ("train", "validation"):
        labelled.to_csv(data / f"{split}.csv", index=False)
    labelled[["sentence"]].to_csv(data / "test.csv", index=False)
    quick = ["--data.init_args.data_dir", str(data), "--trainer.limit_train_batches", "1"]
    run_dir = run_cli("fit", *quickstart_args(tmp_path / "fit"), *quick, tmp_path=tmp_path / "fit")
    message = command_error(
        capsys, "test", *quickstart_args(tmp_path / "test"), "--data.init_args.data_dir", str(data),
        "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), tmp_path=tmp_path / "test",
    )  # fmt: skip
    assert message == "Split 'test' has no label column, so test has nothing to score; label it by predict."


def test_mnli_export_starts_rte_with_a_new_classifier(tmp_path):
    """The NeoBERT paper's transfer: MNLI's 3-class model fine-tunes on RTE's 2 classes, new head only."""
    torch.set_num_threads(1)
    mnli = build_cli("fit", *glue_args("mnli", tmp_path / "mnli"))
    export_dir = Path(mnli.trainer.log_dir) / "export"
    with pytest.warns(UserWarning, match=r"classifier for 3 labels \(entailment, neutral, contradiction\)"):
        rte = build_cli(
            "fit", *glue_args("rte", tmp_path / "rte"), "--model.init_args.pretrained", str(export_dir),
            "--model.init_args.model_config", "null",
        )  # fmt: skip
    assert rte.model.model.config.num_labels == 2
    assert rte.model.model.classifier.weight.shape == (2, 64)
    # The backbone came from the MNLI export: one step at a fine-tuning rate barely moves it.
    exported = mnli.model.model.model.encoder.weight
    assert (rte.model.model.model.encoder.weight - exported).abs().max() < 0.05
    assert (Path(rte.trainer.log_dir) / "metrics.json").is_file()


def test_early_stopping_on_a_validation_metric_with_validation_off(tmp_path):
    """Not an error: the run trains without validation, and its early stopping is turned off."""
    torch.set_num_threads(1)
    with pytest.warns(UserWarning, match=r"Validation is off .*early stopping on val/accuracy is turned off"):
        cli = build_cli("fit", *glue_args("sst2", tmp_path), "--trainer.limit_val_batches", "0")
    assert cli.trainer.global_step == 8


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(capsys, tmp_path):
    message = quickstart_error(
        capsys, tmp_path, "--model.class_path", "tests.cli.diverging_task.DivergingTask",
        "--model.init_args.nan_from_step", "3", "--resume_checkpoint.every_n_train_steps", "2",
    )  # fmt: skip
    checkpoint = tmp_path / "runs" / "version_0" / "checkpoints" / "last.ckpt"
    assert message == (
        f"The training loss became nan at step 3 (epoch 0); training stopped, the last good checkpoint is"
        f" '{checkpoint}'; lower the learning rate or use bf16 instead of fp16."
    )
    saved = list(checkpoint.parent.glob("*.ckpt"))
    assert saved == [checkpoint]
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert state["global_step"] == 2  # saved before the NaN step; the save at step 4 was refused
    assert all(torch.isfinite(tensor).all() for tensor in state["state_dict"].values())


@pytest.mark.parametrize(
    "options",
    [
        ["--model.init_args.learning_rate", "-1e-3"],  # argparse took "-1e-3" for an option
        ["--model.init_args.learning_rate=-1e-3"],  # parsed, then refused by torch at the first step
    ],
)
def test_negative_learning_rate_names_the_key(capsys, tmp_path, options):
    message = quickstart_error(capsys, tmp_path, *options)
    assert message == "model.init_args.learning_rate must be positive, got -0.001."


@pytest.mark.parametrize("text", ["-1e-3", "-1E+3", "-2.5e-5", "-.5e1", "-1", "-.5", "-3."])
def test_negative_numbers_with_exponents_are_values(text):
    assert NEGATIVE_NUMBER.match(text)


@pytest.mark.parametrize("text", ["-c", "--config", "-e", "-1e", "-e3", "--1"])
def test_options_are_not_negative_numbers(text):
    assert not NEGATIVE_NUMBER.match(text)


def test_checkpoint_of_another_task_names_both_classes(capsys, tmp_path):
    """A NER checkpoint given to a sequence-classification config: LightningCLI would build the checkpoint's
    task instead, which then refused the config's labels deep inside a traceback."""
    ner = TokenClassificationTask(
        label_names=["O", "B-PER", "I-PER"], pretrained=None, model_config=tiny_config_kwargs()
    )
    # What a `fit` of configs/conll2003.yaml saves: LightningCLI adds _class_path and _instantiator.
    hyper_parameters = {
        "_class_path": "neobert_tasks.tasks.TokenClassificationTask",
        **ner.hparams,
        "_instantiator": "lightning.pytorch.cli.instantiate_module",
    }
    checkpoint = tmp_path / "ner.ckpt"
    torch.save(
        {"epoch": 0, "global_step": 1, "pytorch-lightning_version": lightning.__version__,
         "state_dict": ner.state_dict(), "hyper_parameters": hyper_parameters},
        checkpoint,
    )  # fmt: skip
    message = quickstart_error(capsys, tmp_path, "--ckpt_path", str(checkpoint), subcommand="validate")
    assert message == (
        f"Checkpoint '{checkpoint}' was trained with neobert_tasks.tasks.TokenClassificationTask, not with"
        f" model.class_path neobert_tasks.tasks.SequenceClassificationTask in config file '{QUICKSTART}';"
        " give it the config of the run that wrote it (--config <run>/config.yaml), or give a checkpoint"
        " of a SequenceClassificationTask run."
    )


def test_flash_attention_on_a_cpu_is_refused_before_the_model_is_built(capsys, tmp_path):
    """Without flash-attn, transformers first tried to fetch a kernel from the hub (138 lines)."""
    message = quickstart_error(capsys, tmp_path, "--model.init_args.attn_implementation", "flash_attention_2")
    assert message == (
        "model.init_args.attn_implementation 'flash_attention_2' runs on CUDA GPUs only and this run is on"
        " cpu; use one of sdpa, sdpa_varlen, eager there (sdpa_varlen skips padding as flash-attn does)."
    )


@pytest.mark.parametrize(
    ("key", "base", "example"),
    [
        ("model", "NeoBERTTask (a LightningModule)", "neobert_tasks.tasks.SequenceClassificationTask"),
        ("data", "TokenizedDataModule (a LightningDataModule)", "neobert_tasks.data.GLUEDataModule"),
    ],
)
def test_class_path_of_something_else_names_the_value_and_the_classes(capsys, tmp_path, key, base, example):
    """It used to blame the debug preset, the last config file with a `model` key: "expected None"."""
    message = quickstart_error(capsys, tmp_path, f"--{key}.class_path", "builtins.print")
    assert message.startswith(
        f"{key}.class_path must name a subclass of {base}, not 'builtins.print' on the command line; give one"
        " of "
    )
    assert example in message and message.endswith(".")


def test_pretrained_folder_with_only_pickle_weights_says_how_to_convert(capsys, tmp_path):
    pickled = tmp_path / "pickled"
    NeoBERTForSequenceClassification(NeoBERTConfig(**tiny_config_kwargs())).save_pretrained(pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    message = quickstart_error(
        capsys, tmp_path / "run", "--model.init_args.pretrained", str(pickled),
        "--model.init_args.model_config", "null",
    )  # fmt: skip
    assert message.startswith(
        f"model.init_args.pretrained '{pickled}' holds only pickle weights (pytorch_model.bin), which can"
        " run code"
    )
    assert "convert_pickle_weights(" in message and "model.init_args.allow_pickle_weights true" in message


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message for a machine without a GPU")


@NO_GPU
@pytest.mark.parametrize(
    ("overrides", "accelerator"),
    [
        (("--trainer.accelerator", "gpu"), "gpu"),
        (("--trainer.accelerator", "cuda"), "cuda"),
        (("--config", str(REPO_ROOT / "configs" / "presets" / "ddp.yaml")), "gpu"),
    ],
)
def test_gpu_accelerator_without_a_gpu_says_why_there_is_none(capsys, tmp_path, overrides, accelerator):
    """Lightning's "No supported gpu backend found!" came with a 40-line traceback; the likeliest cause on a
    GPU machine is the CPU build of torch that the README's first command installs."""
    message = quickstart_error(capsys, tmp_path, *overrides)
    assert message.startswith(f"trainer.accelerator is '{accelerator}' but PyTorch finds no GPU here: torch ")
    reason = "is a CPU-only build" if torch.version.cuda is None else "sees no CUDA device"
    assert reason in message
    assert message.endswith("; set --trainer.accelerator cpu, or auto to use a GPU where there is one.")


@pytest.mark.parametrize(
    ("overrides", "refusal"),
    [
        (("--trainer.num_nodes", "0"), "trainer.num_nodes must be a positive integer, but got 0."),
        (("--trainer.devices", "0"), "trainer.devices '0' value is not a valid input using cpu accelerator."),
    ],
)
def test_hardware_settings_lightning_refuses_are_named_with_the_keys(capsys, tmp_path, overrides, refusal):
    message = quickstart_error(capsys, tmp_path, "--trainer.accelerator", "cpu", *overrides)
    devices = "'0'" if "--trainer.devices" in overrides else "1"
    num_nodes = overrides[1] if "--trainer.num_nodes" in overrides else "1"
    assert message == (
        f"Lightning cannot run the trainer settings trainer.accelerator 'cpu', trainer.devices {devices},"
        f" trainer.strategy 'auto', trainer.num_nodes {num_nodes}, trainer.precision '32-true': {refusal}"
    )


def test_settings_lightning_refuses_once_fit_starts_are_named_too(capsys, tmp_path):
    """Checked against the number of batches when fit starts, after the Trainer was built."""
    message = quickstart_error(capsys, tmp_path, "--trainer.val_check_interval", "1000")
    assert message.startswith(
        "Lightning cannot run trainer settings: trainer.val_check_interval (1000) must be less than or"
        " equal to the number of the training batches ("
    )


def test_a_count_lightning_would_divide_by_is_refused_before_anything_is_built(capsys, tmp_path):
    message = quickstart_error(capsys, tmp_path, "--trainer.accumulate_grad_batches", "0")
    assert message == "trainer.accumulate_grad_batches must be a positive integer, got 0."


@pytest.mark.parametrize("option", ["batch_size", "eval_batch_size", "limit_eval_samples"])
def test_a_count_of_the_data_below_one_is_refused_by_its_key(capsys, tmp_path, option):
    message = quickstart_error(capsys, tmp_path, f"--data.init_args.{option}", "0")
    assert message == f"data.init_args.{option} must be a positive integer, got 0."


@pytest.mark.parametrize("kind", ["text file", "directory"])
def test_checkpoint_that_is_not_a_checkpoint_file(capsys, tmp_path, kind):
    """A text file gave torch's bare `KeyError: 101`; a directory was said not to exist."""
    path = tmp_path / "given"
    if kind == "directory":
        path.mkdir()
    else:
        path.write_text("hello\n")
    message = quickstart_error(capsys, tmp_path, "--ckpt_path", str(path))
    assert message == (
        f"Checkpoint '{path}' is a directory; give a .ckpt file in it (or --ckpt_path best or last)."
        if kind == "directory"
        else f"Checkpoint '{path}' is not a checkpoint: torch.save writes zip archives and this 6-byte"
        " file is not one; give the .ckpt file of a run (or --ckpt_path best or last)."
    )


def test_a_checkpoint_monitor_no_validation_logs_is_named_with_the_metrics_that_were(capsys, tmp_path):
    """Lightning raised it after the first validation with a traceback and a hint for module authors."""
    message = quickstart_error(capsys, tmp_path, "--checkpoint.monitor", "val/acuracy")
    assert message == (
        "checkpoint.monitor 'val/acuracy' is not among the metrics the validation at step 8 logged"
        " (val/accuracy, val/f1, val/f1_macro, val/loss), perhaps because trainer.limit_val_batches 4 ended"
        " it early; monitor one of those."
    )


def test_an_early_stopping_monitor_no_validation_logs_is_named(capsys, tmp_path):
    message = quickstart_error(
        capsys, tmp_path, "--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor", "val/acuracy"
    )
    assert message == (
        "trainer.callbacks: EarlyStopping's monitor 'val/acuracy' is not a metric this run logs; monitor one"
        " of train/loss, val/accuracy, val/f1, val/f1_macro, val/loss."
    )
