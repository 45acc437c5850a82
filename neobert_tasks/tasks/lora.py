"""LoRA adapters through the ``peft`` library: wrapping a task model, its checkpoints and its exports.

``model.init_args.peft`` names the adapter; the task wraps its model with ``peft.get_peft_model`` so that
only the low-rank matrices of the chosen projections and the task head (``modules_to_save``) train.
peft cannot guess NeoBERT's projection names (it keys its defaults on ``model_type``), which is why a
hand-built ``LoraConfig(task_type=SEQ_CLS)`` fails without ``target_modules``; the defaults are here.

Checkpoints keep the trainable tensors only: the frozen backbone is rebuilt from ``pretrained`` (or from
the seed for a random ``model_config``), and a fingerprint of it guards against resuming on another one.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from neobert_tasks.errors import ConfigError
from neobert_tasks.run_directory import readable_as_umask_allows

TARGET_MODULES = ("qkv", "wo", "w12", "w3")
"""NeoBERT's projections: attention in (``qkv``) and out (``wo``), SwiGLU in (``w12``) and out (``w3``)."""

LORA_DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": list(TARGET_MODULES)}
"""The keys ``model.init_args.peft`` takes, with their defaults (alpha/r scales the update). Dropout is off,
as in peft: its LoRA dropout keeps a dropped-out copy of every adapted layer's input for the backward pass,
which costs time and memory (bench/README.md, LoRA)."""

ADAPTER_DIRECTORY = "adapter"
"""Folder of an export that holds the adapter alone, in PEFT's format."""

FINGERPRINT_KEY = "frozen_weights_fingerprint"
"""Checkpoint entry holding (count, sum, sum of squares) of the frozen weights the adapters sit on."""


def lora_options(peft: dict[str, Any]) -> dict[str, Any]:
    """``peft`` completed with the defaults; an unknown key or value is refused naming it."""
    unknown = sorted(set(peft) - set(LORA_DEFAULTS))
    if unknown:
        raise ConfigError(
            f"model.init_args.peft has unknown key(s) {', '.join(unknown)}; it takes"
            f" {', '.join(LORA_DEFAULTS)}."
        )
    options = {**LORA_DEFAULTS, **peft}
    if not isinstance(options["r"], int) or options["r"] < 1:
        raise ConfigError(f"model.init_args.peft.r must be a positive integer, got {options['r']!r}.")
    alpha = options["alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        # alpha / r scales the update: 0 silences the adapters, a negative value reverses them.
        raise ConfigError(f"model.init_args.peft.alpha must be a positive number, got {alpha!r}.")
    if not 0 <= options["dropout"] < 1:
        raise ConfigError(f"model.init_args.peft.dropout must be in [0, 1), got {options['dropout']!r}.")
    wrong = [name for name in options["target_modules"] if name not in TARGET_MODULES]
    if wrong or not options["target_modules"]:
        raise ConfigError(
            f"model.init_args.peft.target_modules {options['target_modules']} must name one or more of"
            f" NeoBERT's projections {', '.join(TARGET_MODULES)}."
        )
    return options


def lora_description(peft: dict[str, Any]) -> str:
    """``LoRA r=8, alpha=16, dropout=0.0 on qkv, wo, w12, w3``: what the log says of ``peft``."""
    options = lora_options(peft)
    targets = ", ".join(options["target_modules"])
    return f"LoRA r={options['r']}, alpha={options['alpha']}, dropout={options['dropout']} on {targets}"


def add_lora(model: torch.nn.Module, peft: dict[str, Any], head_modules: tuple[str, ...]) -> torch.nn.Module:
    """Wrap ``model`` in a ``PeftModel`` with LoRA on the target projections; ``head_modules`` (the task
    head) train in full and are saved with the adapter (``modules_to_save``)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError(
            "model.init_args.peft needs the peft package: pip install 'neobert_tasks[peft]'."
        ) from None
    options = lora_options(peft)
    config = LoraConfig(
        r=options["r"],
        lora_alpha=options["alpha"],
        lora_dropout=options["dropout"],
        target_modules=list(options["target_modules"]),
        modules_to_save=list(head_modules) or None,
    )
    with warnings.catch_warnings():
        # peft asks the model `is_gradient_checkpointing`, which transformers 5 renamed (it warns).
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config)


def is_peft_model(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a ``PeftModel`` (without importing peft when it is not installed)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


def merged_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A plain model of the task's class with the adapters added into its weights, ``model`` untouched."""
    return copy.deepcopy(model).merge_and_unload()


def save_adapter(model: torch.nn.Module, directory: Path, base_model: str | None) -> None:
    """Write the adapter alone in PEFT's format (``adapter_config.json``, ``adapter_model.safetensors``),
    which ``PeftModel.from_pretrained(<base model>, directory)`` loads; ``base_model`` is recorded in it.

    peft records the class to rebuild the base model with for ``AutoPeftModel`` as this package's head
    class, which a user without it cannot import: the matching transformers Auto class is recorded instead
    (it loads NeoBERT from the base model's remote code). peft's README is its blank template: a short
    card replaces it."""
    for config in model.peft_config.values():
        config.base_model_name_or_path = base_model
    model.save_pretrained(directory)
    for weights in directory.glob("*.safetensors"):  # peft writes them 0600, like transformers 5
        readable_as_umask_allows(weights)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    head = type(model.get_base_model()).__name__.removeprefix("NeoBERT")  # Model, ForMaskedLM, …
    auto_class = "AutoModel" + head.removeprefix("Model")
    config["auto_mapping"] = {"base_model_class": auto_class, "parent_library": "transformers"}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    load_arguments = head_arguments(model.get_base_model())
    (directory / "README.md").write_text(
        adapter_card(lora_description(saved_options(config)), base_model, load_arguments), encoding="utf-8"
    )


def head_arguments(head: torch.nn.Module) -> str:
    """The keyword arguments that rebuild a head sized by its labels, as Python source. ``AutoPeftModel``
    builds the base model from the base model's own config, which has 2 unnamed labels: a 3-class, a
    regression or an NER head would not load, and a binary one would lose its label names."""
    if not type(head).__name__.endswith(("ForSequenceClassification", "ForTokenClassification")):
        return ""
    config = head.config
    id2label = {int(index): name for index, name in config.id2label.items()}
    arguments = f"id2label={id2label!r}, label2id={config.label2id!r}"
    return arguments + (f", problem_type={config.problem_type!r}" if config.problem_type else "")


def saved_options(config: dict[str, Any]) -> dict[str, Any]:
    """``model.init_args.peft`` as a saved ``adapter_config.json`` holds it."""
    names = {"r": "r", "alpha": "lora_alpha", "dropout": "lora_dropout"}
    # peft saves the targets from a set, in no fixed order: NeoBERT's order, as the options list them.
    order = {name: position for position, name in enumerate(TARGET_MODULES)}
    targets = sorted(config["target_modules"], key=lambda name: (order.get(name, len(order)), name))
    return {**{option: config[key] for option, key in names.items()}, "target_modules": targets}


def adapter_card(description: str, base_model: str | None, load_arguments: str = "") -> str:
    """The adapter folder's README: what it is, what it sits on, and how to load it (``load_arguments``:
    what the head needs beyond the base model's config, `head_arguments`)."""
    merged = (
        "The folder above holds the same model with the adapter merged into its weights, which needs no peft."
    )
    if base_model is None:
        return (
            f"---\nlibrary_name: peft\n---\n\n# LoRA adapter\n\n{description}, trained with neobert_tasks"
            " over a randomly initialised NeoBERT that was not saved: load the merged model instead."
            f" {merged}\n"
        )
    return (
        f"---\nlibrary_name: peft\nbase_model: {base_model}\n---\n\n# LoRA adapter\n\n{description}, trained"
        f" with neobert_tasks over `{base_model}`. {merged}\n\nWith the base model loaded (its head class"
        ' from its own remote code), `peft.PeftModel.from_pretrained(base, "path/to/adapter")`. Where the'
        " base model's remote code maps this head's Auto class (exports of neobert_tasks do), peft rebuilds"
        " it alone:\n\n```python\nfrom peft import AutoPeftModel\n\n"
        'model = AutoPeftModel.from_pretrained(\n    "path/to/adapter", trust_remote_code=True'
        + (f",\n    {load_arguments},\n)" if load_arguments else ")")
        + "\n```\n"
    )


def trainable_state_dict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``state_dict`` without the frozen parameters (buffers stay): what a LoRA checkpoint holds."""
    frozen = {name for name, parameter in module.named_parameters() if not parameter.requires_grad}
    return {name: value for name, value in state_dict.items() if name not in frozen}


def frozen_fingerprint(module: torch.nn.Module) -> list[float]:
    """(count, sum, sum of squares) of the frozen parameters, in float64: equal for the same backbone."""
    frozen = [parameter.detach() for parameter in module.parameters() if not parameter.requires_grad]
    count = sum(parameter.numel() for parameter in frozen)
    total = sum(float(parameter.double().sum()) for parameter in frozen)
    squares = sum(float(parameter.double().square().sum()) for parameter in frozen)
    return [float(count), total, squares]


def check_lora_checkpoint(module: torch.nn.Module, checkpoint: dict[str, Any], where: str) -> None:
    """Refuse a checkpoint that lacks the adapter's weights or was trained over another frozen backbone:
    loading it non-strictly would otherwise keep fresh adapters or combine them with the wrong weights."""
    saved = checkpoint.get("state_dict", {})
    trainable = [name for name, parameter in module.named_parameters() if parameter.requires_grad]
    missing = [name for name in trainable if name not in saved]
    if missing:
        raise ConfigError(
            f"{where} has no weights for {len(missing)} of the adapter's tensors (first: '{missing[0]}'): it"
            " was trained without model.init_args.peft or with other target_modules."
        )
    expected = checkpoint.get(FINGERPRINT_KEY)
    if expected is None:
        return
    current = frozen_fingerprint(module)
    if current[0] != expected[0] or any(
        abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(current[1:], expected[1:], strict=True)
    ):
        raise ConfigError(
            f"{where} was trained over other frozen weights than the model built now"
            " (model.init_args.pretrained or model.init_args.model_config and seed differ): its adapters"
            " only fit the backbone they were trained on."
        )
