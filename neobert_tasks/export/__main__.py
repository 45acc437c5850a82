"""``python -m neobert_tasks.export MODEL_DIR [--output DIR] [--formats onnx pt2] [--pooling mean|cls]
[--push_to_hub REPO]``.

Re-export a model folder as a self-contained one (see `neobert_tasks.export.folder`): an export of an
earlier neobert_tasks version that lacks the remote code, a folder to which ONNX should be added, or any
NeoBERT checkpoint directory (the official one included). The model card and training config of the
folder are kept. ``fit`` writes the same folder at its end (``--export.formats`` and ``--export.pooling``).
``--push_to_hub`` then uploads the folder to a hub repository (`neobert_tasks.export.hub`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from transformers import AutoTokenizer

from neobert_tasks.console import ignore_library_warnings, transformers_progress_bars_off
from neobert_tasks.errors import MissingPathError, UserInputError
from neobert_tasks.export.folder import TRAINING_CONFIG, export_model_folder
from neobert_tasks.export.graph import GRAPH_FORMATS, check_graph_formats
from neobert_tasks.export.hub import check_can_push, push_folder
from neobert_tasks.export.sentence_transformers import exported_settings
from neobert_tasks.model import AUTO_CLASSES, NeoBERTConfig, NeoBERTForMaskedLM, NeoBERTModel
from neobert_tasks.model.loading import SAFETENSORS_WEIGHTS
from neobert_tasks.model.pooling import POOLING_MODES
from neobert_tasks.run_directory import run_of_checkpoint

# config.json "architectures" → class; the official checkpoint names its classes NeoBERT and NeoBERTLMHead.
ARCHITECTURES = {model_class.__name__: model_class for model_class in AUTO_CLASSES.values()} | {
    "NeoBERT": NeoBERTModel,
    "NeoBERTLMHead": NeoBERTForMaskedLM,
}


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m neobert_tasks.export",
        description="Re-export a NeoBERT model folder as a self-contained one (modelling code, tokenizer,"
        " sentence-transformers files, card), optionally adding ONNX or torch.export graphs and uploading"
        " it to the hub.",
    )
    parser.add_argument("model_dir", help="the model folder to export (config.json and model.safetensors)")
    parser.add_argument("--output", help="where to write the folder; default: MODEL_DIR itself")
    parser.add_argument(
        "--formats", nargs="*", default=[], choices=sorted(GRAPH_FORMATS), help="graphs to add"
    )
    parser.add_argument(
        "--pooling",
        choices=POOLING_MODES,
        help="sentence-transformers pooling; default: the folder's, else mean",
    )
    parser.add_argument(
        "--normalize",
        action=argparse.BooleanOptionalAction,
        help="L2-normalise sentence-transformers embeddings; default: as the folder's modules.json says",
    )
    parser.add_argument(
        "--max_seq_length",
        type=int,
        help="longest input for sentence-transformers; default: the folder's, else the model's max_length",
    )
    parser.add_argument("--push_to_hub", metavar="REPO", help="then upload the folder to this hub repository")
    parser.add_argument(
        "--hub_private",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create the hub repository private (default); an existing one keeps its visibility",
    )
    return parser.parse_args(argv)


def check_paths(source: Path, output: str | None) -> None:
    """One sentence for a model folder that is missing, a file, or a run folder, and for an output that is
    a file."""
    if not source.exists():
        raise MissingPathError(f"Model folder '{source}' does not exist.")
    if source.is_file():
        raise MissingPathError(
            f"'{source}' is a file; give the model folder that holds it ('{source.parent}')."
        )
    if not (source / "config.json").is_file():
        # A run folder (runs/x/version_0) holds its model in export/.
        hint = (
            f"; the run's model is in '{source / 'export'}'"
            if (source / "export" / "config.json").is_file()
            else ""
        )
        raise MissingPathError(f"'{source}' is not a model folder: it has no config.json{hint}.")
    if output is not None and Path(output).expanduser().is_file():
        raise UserInputError(f"--output '{output}' is a file; give a folder to write the export into.")


def export_directory(arguments: argparse.Namespace) -> Path:
    """Load ``model_dir`` with the package's class for its architecture and write the export."""
    source = Path(arguments.model_dir).expanduser()
    if source.is_file() and source.suffix == ".ckpt":
        run = run_of_checkpoint(str(source))
        config = run / "config.yaml" if run is not None else "<the run's config.yaml>"
        raise UserInputError(
            f"'{source}' is a training checkpoint, not a model folder: export it with python -m neobert_tasks"
            f" validate --config {config} --ckpt_path {source} --export.after_validate true."
        )
    check_paths(source, arguments.output)
    check_graph_formats(arguments.formats)
    if arguments.push_to_hub:
        check_can_push(arguments.push_to_hub, "--push_to_hub")
    config = NeoBERTConfig.from_pretrained(source)
    longest = arguments.max_seq_length
    if longest is not None and not 0 < longest <= config.max_length:
        raise UserInputError(
            f"--max_seq_length must be in [1, {config.max_length}] (the model's max_length), got {longest}."
        )
    architecture = (config.architectures or ["NeoBERTModel"])[0]
    if architecture not in ARCHITECTURES:
        raise UserInputError(
            f"config.json of '{source}' names architecture {architecture!r}, not a NeoBERT one."
        )
    if not any((source / name).is_file() for name in SAFETENSORS_WEIGHTS):
        # Pickle weights can run code when loaded: the export reads safetensors only, as training does.
        raise UserInputError(
            f"'{source}' has no model.safetensors; convert pickle weights once with python -c \"from"
            " neobert_tasks.model.loading import convert_pickle_weights;"
            f" convert_pickle_weights('{source}')\" if you trust them."
        )
    with transformers_progress_bars_off():  # a "Loading weights" bar for one local file is only noise
        model = ARCHITECTURES[architecture].from_pretrained(source, use_safetensors=True).eval()
    has_tokenizer = any((source / name).is_file() for name in ("tokenizer.json", "vocab.txt"))
    tokenizer = AutoTokenizer.from_pretrained(source) if has_tokenizer else None
    output = Path(arguments.output).expanduser() if arguments.output else source
    output.mkdir(parents=True, exist_ok=True)
    for kept in ("README.md", TRAINING_CONFIG):  # the card and the config describe the same model
        if (source / kept).is_file() and output.resolve() != source.resolve():
            shutil.copyfile(source / kept, output / kept)
    # The folder's sentence-transformers settings (pooling, normalisation, a query prompt, the trained
    # input length) are what its embeddings were scored with: kept unless the command line says otherwise.
    kept = exported_settings(source)
    normalize = kept["normalize"] if arguments.normalize is None else arguments.normalize
    differences = export_model_folder(
        model, output, tokenizer=tokenizer, pooling=arguments.pooling or kept.get("pooling", "mean"),
        normalize=normalize, prompts=kept.get("prompts"),
        max_seq_length=arguments.max_seq_length or kept.get("max_seq_length"), formats=arguments.formats,
        remove_other_graphs=output.resolve() != source.resolve(),  # in place: the same weights
    )  # fmt: skip
    for name, difference in differences.items():
        if difference is not None:
            print(f"{GRAPH_FORMATS[name]}: largest difference to PyTorch {difference:.2e}")
    print(f"Exported {architecture} to {output}")
    if arguments.push_to_hub:
        address = push_folder(output, arguments.push_to_hub, private=arguments.hub_private)
        print(f"Pushed {output} to the hub: {address}")
    return output


def main(argv: list[str] | None = None) -> int:
    ignore_library_warnings()  # as the training command does: torch's own deprecations, not the user's
    try:
        export_directory(parse_arguments(argv))
    except UserInputError as error:
        print(f"neobert_tasks.export: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
