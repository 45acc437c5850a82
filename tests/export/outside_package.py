"""Use exported models as someone without neobert_tasks does; run as a script in a subprocess.

    python tests/export/outside_package.py request.json result.json

``neobert_tasks`` is made unimportable before anything else runs, so every class comes from the export's
own remote code. For each export of the request it loads the Auto class with each attention backend, runs
the pipelines, sentence-transformers and onnxruntime named there on the request's texts, and writes what
they returned (plain lists and numbers) to the result file; the test compares them with the package.
"""

from __future__ import annotations

import sys

sys.modules["neobert_tasks"] = None  # `import neobert_tasks` now raises ImportError

import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402


def plain(value):
    """numpy and torch values → JSON-able Python values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def tokenized(path: str, texts: list):
    tokenizer = transformers.AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    if texts and isinstance(texts[0], list):  # (question, context) pairs
        return tokenizer([q for q, _ in texts], [c for _, c in texts], padding=True, return_tensors="pt")
    return tokenizer(texts, padding=True, return_tensors="pt")


def auto_model_outputs(export: dict) -> dict:
    """Each output tensor of the Auto class, per attention backend, and the classes that produced them."""
    batch = tokenized(export["path"], export["texts"])
    auto_class = getattr(transformers, export["auto_class"])
    results = {"attention_mask": batch["attention_mask"].tolist()}
    for backend in ("sdpa", "eager"):
        model = auto_class.from_pretrained(
            export["path"], trust_remote_code=True, attn_implementation=backend
        )
        with torch.no_grad():
            outputs = model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        results[backend] = {name: outputs[name].tolist() for name in export["output_names"]}
        results["module"] = type(model).__module__
    return results


def pipeline_outputs(export: dict) -> list:
    outputs = []
    for spec in export.get("pipelines", []):
        pipe = transformers.pipeline(spec["task"], model=export["path"], trust_remote_code=True)
        outputs.append(plain(pipe(spec["inputs"], **spec.get("kwargs", {}))))
    return outputs


def sentence_embeddings(export: dict) -> list | None:
    if not export.get("sentence_transformers"):
        return None
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(export["path"], trust_remote_code=True, device="cpu")
    return model.encode(export["texts"], convert_to_numpy=True, batch_size=64).tolist()


def onnx_outputs(export: dict) -> list | None:
    if not export.get("onnx"):
        return None
    import onnxruntime

    batch = tokenized(export["path"], export["texts"])
    session = onnxruntime.InferenceSession(f"{export['path']}/model.onnx", providers=["CPUExecutionProvider"])
    feeds = {"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}
    return [output.tolist() for output in session.run(None, feeds)]


def main(request_path: str, result_path: str) -> None:
    try:
        import neobert_tasks  # noqa: F401
    except ImportError:
        pass
    else:
        raise AssertionError("neobert_tasks is importable in the outside process")
    with open(request_path) as handle:
        request = json.load(handle)
    results = {}
    for name, export in request.items():
        results[name] = {
            "auto": auto_model_outputs(export),
            "pipelines": pipeline_outputs(export),
            "sentence_embeddings": sentence_embeddings(export),
            "onnx": onnx_outputs(export),
        }
    with open(result_path, "w") as handle:
        json.dump(results, handle)


if __name__ == "__main__":
    main(*sys.argv[1:3])
