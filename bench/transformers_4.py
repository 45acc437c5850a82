"""Do exports load under transformers 4 as under transformers 5? One venv per release, run by hand.

    python -m bench.transformers_4 --releases 4.55.4 4.57.6

Writes a tiny random export of every head (sequence, token, QA, MLM, backbone) with ``export_model_folder``
and the repository's tokenizer, then has ``tests/export/outside_package.py`` load each one as a user without
neobert_tasks does (Auto class with sdpa and eager, the text-classification, token-classification and
fill-mask pipelines, sentence-transformers), once in this environment (transformers 5) and once in a venv
per requested transformers 4 release. The venvs (this torch, that transformers, sentence-transformers < 6)
are made under ``--work`` and kept for the next run; they need the package index. Prints, per release and
export, the largest difference of the Auto class outputs to transformers 5, and whether the pipelines and
the sentence embeddings agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from bench.common import write_json
from neobert_tasks.export.folder import export_model_folder
from neobert_tasks.model import (
    NeoBERTConfig,
    NeoBERTForMaskedLM,
    NeoBERTForQuestionAnswering,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = REPO_ROOT / "tests" / "export" / "outside_package.py"
TOKENIZER = REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased"
SHAPE = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
TEXTS = ["a gripping , beautifully shot film .", "john smith went to paris in june", "dull ."]
MASKED = ["the [MASK] of the river is near the mountain .", "paris is the [MASK] of france ."]
QA_PAIRS = [["who wrote it ?", "the note was written by ada in london ."], ["when ?", TEXTS[1]]]
TAGS = {0: "O", 1: "B-LOC", 2: "I-LOC", 3: "B-PER", 4: "I-PER"}
TOKEN_TAGS = {"id2label": TAGS, "label2id": {tag: index for index, tag in TAGS.items()}}
# name → (head class, config fields, Auto class, outputs compared, pipelines run)
HEADS = {
    "sequence": (NeoBERTForSequenceClassification, {"num_labels": 2}, "AutoModelForSequenceClassification",
                 ["logits"], [{"task": "text-classification", "inputs": TEXTS, "kwargs": {"top_k": None}}]),
    "token": (NeoBERTForTokenClassification, TOKEN_TAGS, "AutoModelForTokenClassification", ["logits"],
              [{"task": "token-classification", "inputs": TEXTS,
                "kwargs": {"aggregation_strategy": "first"}}]),
    "qa": (NeoBERTForQuestionAnswering, {}, "AutoModelForQuestionAnswering",
           ["start_logits", "end_logits"], []),
    "mlm": (NeoBERTForMaskedLM, {}, "AutoModelForMaskedLM", ["logits"],
            [{"task": "fill-mask", "inputs": MASKED, "kwargs": {"top_k": 5}}]),
    "backbone": (NeoBERTModel, {}, "AutoModel", ["last_hidden_state"], []),
}  # fmt: skip


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    description = __doc__.splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m bench.transformers_4", description=description)
    parser.add_argument("--releases", nargs="+", default=["4.55.4", "4.57.6"], help="transformers 4 releases")
    parser.add_argument("--work", default="runs/bench/transformers_4", help="exports, venvs and results")
    parser.add_argument("--json", help="write the comparison here")
    return parser.parse_args(argv)


def write_exports(work: Path) -> dict:
    """A tiny random export of every head; returns the request for outside_package.py."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    request = {}
    for index, (name, (head, fields, auto_class, outputs, pipelines)) in enumerate(HEADS.items()):
        torch.manual_seed(index)
        path = work / "exports" / name
        export_model_folder(head(NeoBERTConfig(**SHAPE, **fields)).eval(), path, tokenizer=tokenizer)
        texts = QA_PAIRS if name == "qa" else MASKED if name == "mlm" else TEXTS
        request[name] = {
            "path": str(path), "auto_class": auto_class, "output_names": outputs, "texts": texts,
            "sentence_transformers": name != "qa", "onnx": False, "pipelines": pipelines,
        }  # fmt: skip
    return request


def venv_python(work: Path, release: str) -> Path:
    """The python of a venv with this torch, transformers ``release`` and sentence-transformers < 6."""
    venv = work / f"venv-{release}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        torch_release = torch.__version__.split("+")[0]
        packages = [f"torch=={torch_release}", f"transformers=={release}", "sentence-transformers<6", "numpy"]
        subprocess.run([str(python), "-m", "pip", "install", "-q", *packages], check=True)
    return python


def outside_results(python: Path, request_path: Path, result_path: Path) -> dict:
    modules = f"{result_path}.modules"  # each environment compiles the remote code for itself
    environment = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": modules}
    command = [str(python), str(OUTSIDE), str(request_path), str(result_path)]
    completed = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=1200)
    if completed.returncode != 0:
        raise RuntimeError(f"{python}: {completed.stderr[-3000:]}")
    return json.loads(result_path.read_text())


def largest_difference(ours: list, theirs: list) -> float:
    return float(np.max(np.abs(np.asarray(ours) - np.asarray(theirs))))


def compare(reference: dict, other: dict) -> dict:
    """Per export: the largest Auto-class difference, and whether pipelines and embeddings agree."""
    rows = {}
    for name, ours in reference.items():
        theirs = other[name]
        largest = max(
            largest_difference(ours["auto"][backend][key], theirs["auto"][backend][key])
            for backend in ("sdpa", "eager")
            for key in ours["auto"][backend]
        )
        embeddings = ours["sentence_embeddings"]
        rows[name] = {
            "largest_difference": largest,
            "pipelines_equal": json.dumps(ours["pipelines"]) == json.dumps(theirs["pipelines"]),
            "embeddings_difference": (
                None if embeddings is None else largest_difference(embeddings, theirs["sentence_embeddings"])
            ),
        }
    return rows


def main() -> None:
    arguments = parse_arguments()
    work = Path(arguments.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    request_path = work / "request.json"
    request_path.write_text(json.dumps(write_exports(work)))
    reference = outside_results(Path(sys.executable), request_path, work / "result-5.json")
    comparison = {}
    for release in arguments.releases:
        other = outside_results(venv_python(work, release), request_path, work / f"result-{release}.json")
        comparison[release] = compare(reference, other)
        for name, row in comparison[release].items():
            cells = (f"{key} {value}" for key, value in row.items())
            print(f"transformers {release} {name:9s}", *cells, sep="  ")
    if arguments.json:
        write_json(arguments.json, {"releases": comparison})


if __name__ == "__main__":
    main()
