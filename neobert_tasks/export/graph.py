"""The exported model as a graph: ``model.onnx`` for onnxruntime, ``model.pt2`` for ``torch.export``.

Both trace the inference path with ``input_ids`` and ``attention_mask`` of any batch size and length (up
to the model's ``max_length``): dynamic axes, so one file serves every batch. The ONNX file comes from
PyTorch's ``torch.export``-based exporter, which lowers RMSNorm and the boolean attention mask into
standard ONNX operators; it is checked against PyTorch with onnxruntime, when installed, on a padded
batch of mixed lengths before it is kept.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedModel

from neobert_tasks.errors import ConfigError

GRAPH_FORMATS = {"onnx": "model.onnx", "pt2": "model.pt2"}
# Packages each format needs beyond torch, and the extra that installs them.
FORMAT_PACKAGES = {"onnx": ("onnx", "onnxscript"), "pt2": ()}
INPUT_NAMES = ("input_ids", "attention_mask")
# Largest difference to PyTorch's outputs an ONNX file may show on the check batch (fp32).
ONNX_TOLERANCE = 1e-4


def check_graph_formats(formats: list[str]) -> None:
    """Refuse an unknown format, or one whose packages are missing, before any training starts."""
    for name in formats:
        if name not in GRAPH_FORMATS:
            raise ConfigError(
                f"export.formats: unknown format {name!r}; choose from {', '.join(GRAPH_FORMATS)}."
            )
        missing = [package for package in FORMAT_PACKAGES[name] if importlib.util.find_spec(package) is None]
        if missing:
            raise ConfigError(
                f"export.formats {name} needs the {' and '.join(missing)} package(s): "
                "pip install 'neobert_tasks[export]'."
            )


class InferenceGraph(nn.Module):
    """A NeoBERT model's inference path with positional tensor inputs and a tuple of tensor outputs."""

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        self.model = model
        self.output_names = output_names(model)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return tuple(outputs[name] for name in self.output_names)


def output_names(model: PreTrainedModel) -> tuple[str, ...]:
    """The output tensors of ``model``'s head, by their ``ModelOutput`` names."""
    name = type(model).__name__
    if name.endswith("ForQuestionAnswering"):
        return ("start_logits", "end_logits")
    if name.endswith("Model"):
        return ("last_hidden_state",)
    return ("logits",)


def example_batch(model: PreTrainedModel, batch_size: int = 3, length: int = 24, seed: int = 0):
    """Random token ids, right-padded to mixed lengths (the last row full, the first a third of it)."""
    generator = torch.Generator().manual_seed(seed)
    vocabulary = model.config.vocab_size
    input_ids = torch.randint(
        1000 if vocabulary > 2000 else 1, vocabulary, (batch_size, length), generator=generator
    )
    lengths = torch.linspace(length // 3, length, batch_size).long()
    attention_mask = (torch.arange(length) < lengths[:, None]).long()
    return input_ids.masked_fill(attention_mask == 0, model.config.pad_token_id or 0), attention_mask


def _dynamic_shapes(model: PreTrainedModel) -> tuple[dict, dict]:
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=model.config.max_length)}
    return (axes, dict(axes))


@contextlib.contextmanager
def _inference(model: PreTrainedModel):
    """The model's :class:`InferenceGraph`, in eval mode and without gradients; the previous mode after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield InferenceGraph(model).eval()
    finally:
        model.train(was_training)


def export_program(model: PreTrainedModel) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the inference path, with dynamic batch and sequence axes."""
    with _inference(model) as graph:
        return torch.export.export(graph, example_batch(model), dynamic_shapes=_dynamic_shapes(model))


def save_program(model: PreTrainedModel, directory: str | Path) -> Path:
    """Write ``model.pt2`` (``torch.export.load`` reads it back)."""
    path = Path(directory) / GRAPH_FORMATS["pt2"]
    torch.export.save(export_program(model), path)
    return path


def save_onnx(model: PreTrainedModel, directory: str | Path) -> tuple[Path, float | None]:
    """Write ``model.onnx``; returns its path and its largest difference to PyTorch (None: no onnxruntime)."""
    path = Path(directory) / GRAPH_FORMATS["onnx"]
    # The exporter warns once per torchvision operator it cannot register: noise for a text model.
    registration_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration_log.level
    registration_log.setLevel(logging.ERROR)
    try:
        with _inference(model) as graph, warnings.catch_warnings():
            # The exporter notes that the two inputs share their axis names: that is meant.
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")
            program = torch.onnx.export(
                graph,
                example_batch(model),
                dynamo=True,
                dynamic_shapes=_dynamic_shapes(model),
                input_names=list(INPUT_NAMES),
                output_names=list(graph.output_names),
                verbose=False,
            )
    finally:
        registration_log.setLevel(level)
    program.save(str(path))
    difference = onnx_difference(path, model)
    if difference is not None and difference > ONNX_TOLERANCE:
        raise RuntimeError(f"{path} differs from PyTorch by {difference:.2e} (more than {ONNX_TOLERANCE:g}).")
    return path, difference


def onnx_difference(path: str | Path, model: PreTrainedModel) -> float | None:
    """Largest absolute difference between onnxruntime's and PyTorch's outputs on a padded batch."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_ids, attention_mask = example_batch(model, 4, 40, seed=1)
    ort_outputs = session.run(
        None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()}
    )
    with _inference(model) as graph:
        torch_outputs = graph(input_ids, attention_mask)
    return max(
        float((ours.float() - torch.from_numpy(theirs).float()).abs().max())
        for ours, theirs in zip(torch_outputs, ort_outputs, strict=True)
    )
