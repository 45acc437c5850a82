"""Sentence embeddings from the command line: fit on triplets with STS and retrieval validation, the export
as a sentence-transformers model, ``predict`` to .npy and parquet, ``test`` on the test sets, and gradient
caching that trains exactly as the plain loss does.

The runs use the tiny model and the shared NLI triplets, STS and SciFact copies (skipped without them).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.cli.helpers import CONFIGS, CPU, DEBUG, TINY, build_cli, cache_args, read_metrics_csv
from tests.conftest import shared_path

pytestmark = pytest.mark.slow  # runs the command line end to end

TEXTS = ["A man is playing a guitar.", "A woman is slicing an onion.", "Two dogs run on the beach."]


def embedding_args(tmp_path, config: str = "nli.yaml") -> list[str]:
    """A configs/embeddings run with the tiny model, the debug and CPU presets and absolute shared paths."""
    data = shared_path("data")
    return [
        "--config", str(CONFIGS / "embeddings" / config), "--config", str(TINY), "--config", str(DEBUG),
        "--config", str(CPU),
        "--data.init_args.tokenizer", str(shared_path("tokenizers", "bert-base-uncased")),
        "--data.init_args.data_dir", str(data / "nli_triplets"),
        "--data.init_args.eval_sets", json.dumps([str(data / "glue/stsb/validation.parquet"),
                                                   str(data / "retrieval/scifact")]),
        "--data.init_args.test_sets", json.dumps([str(data / "sts/sickr/test.parquet")]),
        "--trainer.limit_val_batches", "1.0", "--trainer.limit_test_batches", "1.0",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        *cache_args(tmp_path),
    ]  # fmt: skip


def test_fit_scores_exports_predicts_and_tests(tmp_path, capsys):
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - the export extra

    cli = build_cli("fit", *embedding_args(tmp_path), "--data.init_args.query_prefix", "query: ")
    run_dir = tmp_path / "runs" / "version_0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    best = metrics.get("best", metrics)
    text = json.dumps(best)
    for name in ("val/stsb_dev/spearman", "val/scifact/ndcg@10", "val/scifact/bm25/ndcg@10", "val/test/loss"):
        assert name in text, name
    assert cli.trainer.checkpoint_callback.monitor == "val/stsb_dev/spearman"  # monitor: auto

    # The export embeds as the trained module does: mean pooling, normalised, the query prompt kept.
    exported = SentenceTransformer(str(run_dir / "export"), trust_remote_code=True, device="cpu")
    assert [type(module).__name__ for module in exported] == ["Transformer", "Pooling", "Normalize"]
    assert exported.prompts.get("query") == "query: "
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS) + "\n")
    predict = ["--config", str(run_dir / "config.yaml"), "--ckpt_path", "best"]
    build_cli("predict", *predict, "--data.init_args.predict_file", str(tmp_path / "texts.txt"))
    vectors = np.load(run_dir / "predictions" / "predict.npy")
    assert vectors.shape == (3, 64) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(exported.encode(TEXTS), vectors, atol=1e-5)
    build_cli(
        "predict", *predict, "--data.init_args.predict_file", str(tmp_path / "texts.txt"),
        "--model.init_args.embedding_format", "parquet", "--data.init_args.predict_prefix", "query",
    )  # fmt: skip
    table = pd.read_parquet(run_dir / "predictions" / "predict.parquet")
    assert table["text"].tolist() == TEXTS
    np.testing.assert_allclose(np.stack(table["embedding"]), exported.encode_query(TEXTS), atol=1e-5)

    # Two test sets: the checkpoint callback keeps the validation's monitor, so its saved state is restored
    # (Lightning warns of a missing callback otherwise), and each score is listed once, not once per set.
    sets = [str(shared_path("data", "sts", name, "test.parquet")) for name in ("stsb", "sickr")]
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_cli("test", *predict, "--data.init_args.test_sets", json.dumps(sets))
    assert not [str(w.message) for w in caught if "callbacks used to create the checkpoint" in str(w.message)]
    out = capsys.readouterr().out
    assert "DataLoader 1" not in out
    logged = read_metrics_csv(run_dir / "test")
    assert 0 < logged["test/sickr/spearman"][-1] <= 1
    scores = [line.split() for line in out.splitlines() if line.startswith("  test/")]
    assert [name for name, _ in scores] == [
        "test/stsb/spearman", "test/sickr/pearson", "test/sickr/spearman", "test/stsb/pearson"
    ]  # fmt: skip
    shown = float(dict(scores)["test/sickr/spearman"])
    assert shown == pytest.approx(logged["test/sickr/spearman"][-1], abs=1e-4)


def test_grad_cache_trains_as_the_plain_loss(tmp_path):
    """Batches of 48 in chunks of 16 reach the weights of unchunked batches of 48 (no dropout in NeoBERT)."""
    weights, losses = [], []
    for name, chunk in (("plain", "null"), ("cached", "16")):
        build_cli(
            "fit", *embedding_args(tmp_path / name), "--data.init_args.batch_size", "48",
            "--model.init_args.grad_cache_chunk_size", chunk, "--trainer.max_steps", "3",
            "--data.init_args.eval_sets", "[]", "--data.init_args.validation_split", "null",
            "--trainer.limit_val_batches", "0",
        )  # fmt: skip
        run_dir = tmp_path / name / "runs" / "version_0"
        weights.append(load_file(run_dir / "export" / "model.safetensors"))
        losses.append(read_metrics_csv(run_dir)["train/loss"])
    assert losses[0][-1] < losses[0][0]  # it trained
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    plain, cached = weights
    assert plain.keys() == cached.keys()
    for key in plain:
        torch.testing.assert_close(cached[key], plain[key], atol=1e-5, rtol=1e-4, msg=key)


def test_squad_retrieval_config_trains_on_question_paragraph_pairs(tmp_path):
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - the export extra

    squad = shared_path("data", "squad")
    cli = build_cli(
        "fit", *embedding_args(tmp_path, "squad_retrieval.yaml"), "--data.init_args.data_dir", str(squad),
        "--data.init_args.eval_sets", json.dumps([str(squad / "validation.parquet")]),
    )  # fmt: skip
    assert cli.trainer.checkpoint_callback.monitor == "val/squad_dev/ndcg@10"
    assert cli.trainer.callback_metrics["val/squad_dev/bm25/ndcg@10"] > 0.5  # BM25 finds most paragraphs
    exported = SentenceTransformer(str(tmp_path / "runs" / "version_0" / "export"), trust_remote_code=True)
    assert exported.prompts == {"query": "query: ", "document": "passage: "}


def test_a_monitored_set_cut_short_by_limit_val_batches_keeps_the_run(tmp_path, capsys):
    """The squad_retrieval config with the debug preset stopped at its first validation (the monitored
    retrieval set was not embedded whole within limit_val_batches) and lost the run; it now trains on, keeps
    last.ckpt and exports the final weights."""
    squad = shared_path("data", "squad")
    unscored = r"'val/squad_dev/ndcg@10' was not logged .*: trainer.limit_val_batches 1 ended"
    with pytest.warns(UserWarning, match=unscored):
        cli = build_cli(
            "fit", *embedding_args(tmp_path, "squad_retrieval.yaml"), "--data.init_args.data_dir", str(squad),
            "--data.init_args.eval_sets", json.dumps([str(squad / "validation.parquet")]),
            "--trainer.limit_val_batches", "1",
        )  # fmt: skip
    run_dir = tmp_path / "runs" / "version_0"
    summary = json.loads((run_dir / "metrics.json").read_text())
    assert summary["best_checkpoint"] is None and (run_dir / "export" / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and cli.trainer.global_step > 0
    assert capsys.readouterr().out.startswith("No val/squad_dev/ndcg@10 score (no validation logged it)")
