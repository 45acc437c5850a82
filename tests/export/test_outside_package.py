"""Exported models work without neobert_tasks: Auto classes, pipelines, sentence-transformers, onnxruntime.

A tiny model is fine-tuned for each head (a few steps, with ``export.formats [onnx]``), and the bare backbone
is exported on its own. A subprocess in which ``neobert_tasks`` cannot be imported (tests/export/
outside_package.py) then loads every export the way a Hugging Face user does; what it gets is compared here
with the package's own numbers:
* the Auto class's outputs with ``sdpa`` and ``eager`` on a right-padded batch of mixed lengths: the
  package's logits to 1e-5;
* ``pipeline("text-classification")`` against ``predict``'s JSONL (label and score to 1e-5);
  ``pipeline("token-classification")`` against ``predict``'s entities (``simple`` aggregation on words the
  tokenizer keeps whole, ``first`` on any words: spans and types equal, scores to 1e-5);
  ``pipeline("fill-mask")`` against ``predict``'s top-5 tokens (ids equal, scores to 1e-5);
* a QA export's model card code (transformers 5 has no QA pipeline), run in a fresh process, against the
  package's SQuAD post-processing of the same logits;
* ``SentenceTransformer(export).encode`` against the package's pooled embeddings to 1e-5;
* ``model.onnx`` in onnxruntime against PyTorch to 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoTokenizer

from neobert_tasks.data.keys import EXAMPLE_INDEX
from neobert_tasks.data.squad_windows import encode_question_windows
from neobert_tasks.export.folder import export_model_folder
from neobert_tasks.model import (
    NeoBERTConfig,
    NeoBERTForMaskedLM,
    NeoBERTForQuestionAnswering,
    NeoBERTForSequenceClassification,
    NeoBERTForTokenClassification,
    NeoBERTModel,
)
from neobert_tasks.model.pooling import pool_hidden_states
from neobert_tasks.tasks.qa_postprocessing import postprocess_predictions
from tests.cli.helpers import CONFIGS, CPU, DEBUG, TINY, build_cli, cache_args, quickstart_args
from tests.conftest import REPO_ROOT, shared_path, tiny_config_kwargs

pytest.importorskip(
    "sentence_transformers", reason="the export extra (sentence-transformers) is not installed"
)
pytest.importorskip("onnxruntime", reason="the export extra (onnxruntime) is not installed")
pytestmark = pytest.mark.slow  # four fits, five ONNX exports and a subprocess: about two minutes

OUTSIDE = Path(__file__).with_name("outside_package.py")
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
ONNX = ["--export.formats", "[onnx]"]
# Mixed lengths, so the batch is right-padded.
TEXTS = [
    "a gripping , beautifully shot film .",
    "the plot is thin but the actors carry it with real warmth and wit for two long hours",
    "dull .",
]
# About 300 tokens: longer than the quickstart's max_length of 128.
LONG_REVIEW = " ".join(["a gripping film with fine actors , though far too long ."] * 25)
# Every word is one token of bert-base-uncased, so sub-token and word predictions are the same thing.
WHOLE_WORD_TEXTS = [
    "john smith went to paris with the united nations in june .",
    "the new york times said that german and french officials met in london",
]
# Words the tokenizer splits into pieces.
SPLIT_WORD_TEXTS = ["Vanderbilt professors visited Kuala Lumpur and Reykjavik yesterday ."]
MASKED_TEXTS = [
    "the [MASK] of the river is near the mountain .",
    "document [MASK] talks about the [MASK] river and the 3 mountain .",
]
HEADS = {
    "sequence": (NeoBERTForSequenceClassification, "AutoModelForSequenceClassification", ["logits"]),
    "token": (NeoBERTForTokenClassification, "AutoModelForTokenClassification", ["logits"]),
    "qa": (NeoBERTForQuestionAnswering, "AutoModelForQuestionAnswering", ["start_logits", "end_logits"]),
    "mlm": (NeoBERTForMaskedLM, "AutoModelForMaskedLM", ["logits"]),
    "backbone": (NeoBERTModel, "AutoModel", ["last_hidden_state"]),
}


def tokenizer_path() -> Path:
    return shared_path("tokenizers", "bert-base-uncased")


def fit_and_predict(tmp_path: Path, args: list[str], predict_args: list[str]) -> SimpleNamespace:
    """Fit with ``args`` (exporting ONNX too), then predict with the best checkpoint into ``predictions/``."""
    fit = build_cli("fit", *args, *ONNX, *QUIET)
    run_dir = Path(fit.trainer.log_dir)
    summary = json.loads((run_dir / "metrics.json").read_text())
    output_dir = tmp_path / "predictions"
    build_cli(
        "predict", "--config", run_dir / "config.yaml", "--ckpt_path", summary["best_checkpoint"],
        "--prediction_writer.output_dir", output_dir, "--trainer.limit_predict_batches", "1.0", *predict_args,
    )  # fmt: skip
    return SimpleNamespace(export=run_dir / "export", predictions=output_dir)


def sharpen_classifier(export: Path, scale: float) -> None:
    """Re-export a token classifier with its classifier weights scaled, so that a barely trained model
    predicts varied tags (entities of every kind, B- and I- runs) instead of O everywhere."""
    model = NeoBERTForTokenClassification.from_pretrained(export)
    with torch.no_grad():
        model.classifier.weight.mul_(scale)
    export_model_folder(model, export, tokenizer=AutoTokenizer.from_pretrained(export), formats=["onnx"])


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, SimpleNamespace]:
    """One fine-tuned (or, for the backbone, freshly built) export per head, with predict's files."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("exports")
    runs = {}

    tmp = root / "sequence"
    runs["sequence"] = fit_and_predict(tmp, [*quickstart_args(tmp), "--trainer.max_epochs", "1"], [])

    tmp = root / "token"
    token_args = [
        "--config", CONFIGS / "conll2003.yaml", "--config", TINY, "--config", DEBUG, "--config", CPU,
        "--data.init_args.tokenizer", tokenizer_path(), "--data.init_args.data_dir",
        shared_path("data", "conll2003"), "--data.init_args.max_length", "64",
        "--data.init_args.stride", "16", *cache_args(tmp),
        # CoNLL's fine-tuning rate, not the tiny preset's from-scratch one, which in a few steps teaches the
        # model to tag O everywhere, so firmly that sharpening the classifier finds no entity.
        "--model.init_args.learning_rate", "3e-5",
    ]  # fmt: skip
    fit = build_cli("fit", *token_args, *QUIET)  # ONNX comes with the sharpened re-export below
    export = Path(fit.trainer.log_dir) / "export"
    sharpen_classifier(export, 40.0)  # then predict from the export itself, as a user may
    texts = tmp / "texts.txt"
    texts.write_text("\n".join(WHOLE_WORD_TEXTS + SPLIT_WORD_TEXTS) + "\n")
    output_dir = tmp / "predictions"
    build_cli(
        "predict", "--config", Path(fit.trainer.log_dir) / "config.yaml",
        "--model.init_args.model_config", "null", "--model.init_args.pretrained", export,
        "--data.init_args.predict_file", texts, "--prediction_writer.output_dir", output_dir,
    )  # fmt: skip
    runs["token"] = SimpleNamespace(export=export, predictions=output_dir)

    tmp = root / "qa"
    qa_args = [
        "--config", CONFIGS / "squad.yaml", "--config", TINY, "--config", DEBUG, "--config", CPU,
        "--data.init_args.tokenizer", tokenizer_path(), "--data.init_args.dataset", "null",
        "--data.init_args.data_dir", shared_path("data", "squad"), "--data.init_args.max_length", "128",
        "--data.init_args.doc_stride", "32", *cache_args(tmp),
    ]  # fmt: skip
    runs["qa"] = SimpleNamespace(
        export=Path(build_cli("fit", *qa_args, *ONNX, *QUIET).trainer.log_dir) / "export"
    )

    tmp = root / "mlm"
    corpus = tmp / "corpus"
    corpus.mkdir(parents=True)
    lines = [f"document {i} talks about the {i % 7} river and the {i % 5} mountain ." for i in range(300)]
    (corpus / "train.txt").write_text("\n".join(lines) + "\n")
    masked = tmp / "masked.txt"
    masked.write_text("\n".join(MASKED_TEXTS) + "\n")
    mlm_args = [
        "--config", CONFIGS / "mlm.yaml", "--config", TINY, "--config", DEBUG, "--config", CPU,
        "--data.init_args.tokenizer", tokenizer_path(), "--data.init_args.dataset", "null",
        "--data.init_args.data_dir", corpus, "--data.init_args.max_length", "64",
        "--model.init_args.learning_rate", "3e-3", *cache_args(tmp),
    ]  # fmt: skip
    runs["mlm"] = fit_and_predict(tmp, mlm_args, ["--data.init_args.predict_file", masked])

    backbone = NeoBERTModel(NeoBERTConfig(**tiny_config_kwargs())).eval()
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path())
    export = root / "backbone"
    export_model_folder(backbone, export, tokenizer=tokenizer, pooling="cls", max_seq_length=64)
    runs["backbone"] = SimpleNamespace(export=export)
    return runs


def qa_pairs() -> list[list[str]]:
    return [["who wrote it ?", "the note was written by ada in london ."], ["when ?", TEXTS[1]]]


def request_for(runs: dict[str, SimpleNamespace]) -> dict:
    """What the outside process should run on each export."""
    request = {}
    for name, run in runs.items():
        _, auto_class, output_names = HEADS[name]
        texts = qa_pairs() if name == "qa" else MASKED_TEXTS if name == "mlm" else TEXTS
        request[name] = {
            "path": str(run.export), "auto_class": auto_class, "output_names": output_names, "texts": texts,
            "sentence_transformers": name != "qa", "onnx": name != "backbone", "pipelines": [],
        }  # fmt: skip
    request["sequence"]["pipelines"] = [
        {"task": "text-classification", "inputs": validation_texts(), "kwargs": {"top_k": None}},
        {
            "task": "text-classification",
            "inputs": [LONG_REVIEW],
            "kwargs": {"top_k": None, "truncation": True},
        },
    ]
    request["token"]["pipelines"] = [
        {"task": "token-classification", "inputs": WHOLE_WORD_TEXTS,
         "kwargs": {"aggregation_strategy": "simple"}},
        {"task": "token-classification", "inputs": WHOLE_WORD_TEXTS + SPLIT_WORD_TEXTS,
         "kwargs": {"aggregation_strategy": "first"}},
    ]  # fmt: skip
    request["mlm"]["pipelines"] = [{"task": "fill-mask", "inputs": MASKED_TEXTS, "kwargs": {"top_k": 5}}]
    return request


def validation_texts() -> list[str]:
    """The quickstart validation sentences that the debug preset keeps (its first 64 rows)."""
    import pandas as pd

    return pd.read_csv(REPO_ROOT / "data" / "quickstart" / "validation.csv")["sentence"].tolist()[:64]


@pytest.fixture(scope="module")
def outside(exports, tmp_path_factory) -> dict:
    """What the outside process got from every export."""
    work = tmp_path_factory.mktemp("outside")
    (work / "request.json").write_text(json.dumps(request_for(exports)))
    environment = {**os.environ, "HF_MODULES_CACHE": str(work / "modules"), "HF_HUB_OFFLINE": "1"}
    environment["PYTHONPATH"] = ""  # nothing of the repository on the path
    completed = subprocess.run(
        [sys.executable, str(OUTSIDE), str(work / "request.json"), str(work / "result.json")],
        cwd=work, env=environment, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads((work / "result.json").read_text())


def package_outputs(name: str, export: Path, backend: str) -> dict[str, torch.Tensor]:
    """The package's own outputs for the outside process's batch."""
    model_class, _, output_names = HEADS[name]
    model = model_class.from_pretrained(export, attn_implementation=backend).eval()
    tokenizer = AutoTokenizer.from_pretrained(export)
    if name == "qa":
        pairs = qa_pairs()
        batch = tokenizer([q for q, _ in pairs], [c for _, c in pairs], padding=True, return_tensors="pt")
    else:
        batch = tokenizer(MASKED_TEXTS if name == "mlm" else TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return {key: outputs[key] for key in output_names} | {"attention_mask": batch["attention_mask"]}


def max_difference(ours: torch.Tensor, theirs: list) -> float:
    return float((ours.float() - torch.tensor(theirs, dtype=torch.float32)).abs().max())


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_auto_class_gives_the_package_outputs(name, backend, exports, outside):
    result = outside[name]["auto"]
    assert result["module"].startswith("transformers_modules."), result["module"]  # the export's own code
    ours = package_outputs(name, exports[name].export, backend)
    assert result["attention_mask"] == ours["attention_mask"].tolist()
    assert ours["attention_mask"].min() == 0  # the batch is padded
    for key, theirs in result[backend].items():
        assert max_difference(ours[key], theirs) <= 1e-5, (name, key)


def test_an_embedding_models_card_code_runs_outside_the_package(exports, tmp_path):
    """Its code was a feature-extraction pipeline, whose token states are not the model's embeddings."""
    from neobert_tasks.export.model_card import CardFacts, card_prose  # noqa: PLC0415

    export = exports["backbone"].export  # a backbone export without a card: the code of an embedding run's
    card = card_prose(CardFacts("neobert-nli", "NeoBERTModel"))
    code = card_code(card)
    assert "SentenceTransformer(" in code and "encode_query" in code
    assert "tensor([[" in run_card_code(code, export, tmp_path)  # the query and the document's similarity


def test_a_classifiers_card_code_prints_its_prediction_outside_the_package(exports, tmp_path):
    """Run as a script, the pipeline's last line printed nothing (a value shown only in a notebook)."""
    export = exports["sequence"].export
    printed = run_card_code(card_code((export / "README.md").read_text()), export, tmp_path)
    assert "'label': '" in printed and "'score': " in printed, printed


def card_code(card: str) -> str:
    """The Python block of a model card's "Use it" section."""
    return card.split("## Use it", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def run_card_code(code: str, export: Path, folder: Path) -> str:
    """Run a card's code on ``export`` as a user would: a fresh process in ``folder``, nothing of the
    repository on the path; its standard output."""
    (folder / "use_it.py").write_text(code.replace("path/to/folder", str(export)))
    environment = {**os.environ, "HF_MODULES_CACHE": str(folder / "modules"), "PYTHONPATH": ""}
    completed = subprocess.run(
        [sys.executable, "use_it.py"], cwd=folder, env=environment, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


@pytest.mark.parametrize("name", ["sequence", "token", "qa", "mlm"])
def test_onnx_gives_the_package_outputs(name, exports, outside):
    ours = package_outputs(name, exports[name].export, "sdpa")
    output_names = HEADS[name][2]
    assert len(outside[name]["onnx"]) == len(output_names)
    for key, theirs in zip(output_names, outside[name]["onnx"], strict=True):
        assert max_difference(ours[key], theirs) <= 1e-4, (name, key)


@pytest.mark.parametrize("name", ["sequence", "token", "mlm", "backbone"])
def test_sentence_transformers_gives_the_package_embeddings(name, exports, outside):
    export = exports[name].export
    pooling = "cls" if name == "backbone" else "mean"
    backbone = NeoBERTModel.from_pretrained(export).eval()
    texts = MASKED_TEXTS if name == "mlm" else TEXTS
    batch = AutoTokenizer.from_pretrained(export)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = backbone(**batch).last_hidden_state
    ours = pool_hidden_states(hidden, batch["attention_mask"], pooling)
    assert max_difference(ours, outside[name]["sentence_embeddings"]) <= 1e-5


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_text_classification_pipeline_agrees_with_predict(exports, outside):
    records = {
        record["index"]: record for record in read_jsonl(exports["sequence"].predictions / "validation.jsonl")
    }
    piped = outside["sequence"]["pipelines"][0]
    assert sorted(records) == list(range(len(piped)))
    for index, scores in enumerate(piped):
        record = records[index]
        best = max(scores, key=lambda item: item["score"])
        assert best["label"] == record["label"]
        assert abs(best["score"] - record["score"]) <= 1e-5
        for item in scores:
            assert abs(item["score"] - record["probabilities"][item["label"]]) <= 1e-5


def test_pipeline_truncation_cuts_where_the_run_did(exports, outside):
    """The exported tokenizer's model_max_length was bert-base-uncased's 512, so a pipeline's
    ``truncation=True`` let a 300-token review through to a model that refuses more than 128 tokens."""
    export = exports["sequence"].export
    tokenizer = AutoTokenizer.from_pretrained(export)
    assert tokenizer.model_max_length == 128  # the quickstart's data.max_length
    batch = tokenizer([LONG_REVIEW], truncation=True, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 128
    with torch.no_grad():
        probabilities = NeoBERTForSequenceClassification.from_pretrained(export)(**batch).logits.softmax(-1)[
            0
        ]
    (piped,) = outside["sequence"]["pipelines"][1]
    labels = NeoBERTConfig.from_pretrained(export).id2label
    for item in piped:
        label_id = next(index for index, name in labels.items() if name == item["label"])
        assert abs(item["score"] - float(probabilities[label_id])) <= 1e-5


def entity_spans(entities: list[dict], type_key: str) -> list[tuple]:
    return [(entity[type_key], entity["start"], entity["end"]) for entity in entities]


@pytest.mark.parametrize("strategy", ["simple", "first"])
def test_token_classification_pipeline_agrees_with_predict(strategy, exports, outside):
    records = read_jsonl(exports["token"].predictions / "predict.jsonl")
    piped = outside["token"]["pipelines"][0 if strategy == "simple" else 1]
    assert len(piped) == (len(WHOLE_WORD_TEXTS) if strategy == "simple" else len(records))
    found = 0
    for record, entities in zip(records, piped, strict=False):
        assert entity_spans(entities, "entity_group") == entity_spans(record["entities"], "type")
        for theirs, ours in zip(entities, record["entities"], strict=True):
            assert abs(theirs["score"] - ours["score"]) <= 1e-5
        found += len(entities)
    assert found >= 3  # the comparison is about real entities, not two empty lists


def test_fill_mask_pipeline_agrees_with_predict(exports, outside):
    records = read_jsonl(exports["mlm"].predictions / "predict.jsonl")
    piped = outside["mlm"]["pipelines"][0]
    for record, text_output in zip(records, piped, strict=True):
        masks = record["masks"]
        per_mask = text_output if len(masks) > 1 else [text_output]
        assert len(per_mask) == len(masks) == record["text"].count("[MASK]")
        for ours, theirs in zip(masks, per_mask, strict=True):
            assert [item["token"] for item in theirs] == [item["token_id"] for item in ours["predictions"]]
            for mine, pipe in zip(ours["predictions"], theirs, strict=True):
                assert abs(mine["score"] - pipe["score"]) <= 1e-5


# A context of about 300 tokens: three windows at the QA run's max_length 128 and doc_stride 32.
LONG_CONTEXT = " ".join(f"in {1900 + i} the council of town {i} met near the old bridge ." for i in range(30))
QA_CASES = [*qa_pairs(), ["who met near the bridge in 1917 ?", LONG_CONTEXT], ["what is old ?", LONG_CONTEXT]]


def package_answers(export: Path, cases: list[list[str]], threshold: float | None) -> list[str]:
    """What `predict` answers: the datamodule's windows, the model on each, the SQuAD post-processing."""
    tokenizer = AutoTokenizer.from_pretrained(export)
    rows = list(range(len(cases)))
    batch = {"question": [question for question, _ in cases], "context": [c for _, c in cases], "id": rows}
    features = encode_question_windows(
        batch, rows, tokenizer=tokenizer, max_length=128, doc_stride=32, labelled=False, evaluation=True
    )
    model = NeoBERTForQuestionAnswering.from_pretrained(export).eval()
    starts, ends = [], []
    with torch.no_grad():
        for input_ids in features["input_ids"]:
            output = model(input_ids=torch.tensor([input_ids]))
            starts.append(output.start_logits[0].numpy())
            ends.append(output.end_logits[0].numpy())
    return postprocess_predictions(
        batch["context"], features[EXAMPLE_INDEX], features["offset_mapping"], starts, ends,
        version_2=threshold is not None, null_score_diff_threshold=threshold or 0.0,
    ).answers  # fmt: skip


def test_qa_model_cards_code_answers_as_the_package_does(exports, tmp_path):
    """transformers 5 has no question-answering pipeline, so a QA card shows the span search instead: run
    as a user would (a fresh process, nothing of the repository on the path), its ``answer`` gives what the
    package's windows and SQuAD post-processing give, over several windows of a long context and, with a
    no-answer threshold as SQuAD v2.0 runs have, answering "" where the package does."""
    export = exports["qa"].export
    code = card_code((export / "README.md").read_text())
    assert "pipeline(" not in code and "max_length=128, doc_stride=32," in code  # the run's settings
    assert "null_threshold=None)" in code  # a v1.1 run: always a span
    thresholds = [None, -3.0, 0.0, 3.0]
    cases = [[question, context, threshold] for threshold in thresholds for question, context in QA_CASES]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    asking = (
        "\nimport json\n"
        "print(json.dumps([answer(q, c, null_threshold=t) for q, c, t in json.load(open('cases.json'))]))\n"
    )
    printed = run_card_code(code + asking, export, tmp_path).strip().splitlines()
    assert printed[0] in "The note was written by Ada."  # the card's own example runs
    answered = json.loads(printed[-1])
    expected = [answer for threshold in thresholds for answer in package_answers(export, QA_CASES, threshold)]
    assert answered == expected
    assert any(answered) and "" in answered[len(QA_CASES) :]  # spans, and "no answer" at some threshold


@pytest.mark.parametrize("name", ["sequence", "token", "qa", "mlm"])
def test_model_card_parses_with_huggingface_hub(name, exports):
    from huggingface_hub import ModelCard

    card = ModelCard.load(exports[name].export / "README.md")
    data = card.data
    pipeline_tags = {"sequence": "text-classification", "token": "token-classification",
                     "qa": "question-answering", "mlm": "fill-mask"}  # fmt: skip
    assert data.pipeline_tag == pipeline_tags[name]
    assert data.library_name == "transformers" and data.license == "mit" and data.language == "en"
    summary = json.loads((exports[name].export.parent / "metrics.json").read_text())
    scores = {key: value for key, value in summary["best_metrics"].items()
              if key.startswith("val/") and not key.endswith("loss")}  # fmt: skip
    assert scores  # every head reports a validation score
    for key, value in scores.items():
        assert f"| `{key}` | {value:.4f} |" in card.text
    if name == "mlm":  # its small corpus is validated whole
        reported = {result.metric_name: result.metric_value for result in data.eval_results}
        assert reported == {key: pytest.approx(value, abs=1e-6) for key, value in scores.items()}
        assert all(result.dataset_split == "validation" for result in data.eval_results)
    else:  # the debug preset scored the first 64 examples: said, and left out of the model-index
        assert data.eval_results is None and "These scores cover part of their sets only (" in card.text
    if name == "token":  # the debug preset cut the training set: the card says so (it read as all of it)
        assert "| `limit_train_samples` | `256` |" in card.text
        assert "| `limit_train_batches` | `8` |" in card.text
        assert data.datasets is None  # local CoNLL files: no hub id to claim
        assert "| 1 | B-PER |" in card.text
    if name == "sequence":
        assert "| 0 | negative |" in card.text and "| 1 | positive |" in card.text
    for section in ("## Use it", "## Training", "## Intended use and limits", "training_config.yaml"):
        assert section in card.text, section
    assert (exports[name].export / "training_config.yaml").is_file()
