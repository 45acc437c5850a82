"""The notebooks' other helpers: stand-in samples, plots written to files, time and memory of a call."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from neobert_tasks.analysis import cost
from neobert_tasks.analysis.plots import plot_confusion_matrix, plot_learning_curves, plot_versus
from neobert_tasks.analysis.samples import (
    CONLL2003_TAGS,
    quickstart_as_glue_sst2,
    sentiment_similarity_pairs,
    sentiment_triplets,
    synthetic_long_documents,
    synthetic_ner_sentences,
    write_splits,
)
from neobert_tasks.metrics.entities import extract_entities
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.notebooks  # -m notebooks selects everything about the notebooks

matplotlib.use("Agg")


def test_synthetic_long_documents_are_balanced_and_mostly_made_of_their_label():
    sentences = [f"sentence {index}" for index in range(10)]
    labels = ["positive" if index < 3 else "negative" for index in range(10)]
    documents = synthetic_long_documents(sentences, labels, count=40, sentences_per_document=(5, 9), seed=1)
    assert list(documents.columns) == ["title", "text", "label"] and len(documents) == 40
    assert documents["label"].value_counts().to_dict() == {"negative": 20, "positive": 20}
    same, total = 0, 0
    for text, label in zip(documents["text"], documents["label"], strict=True):
        lines = text.split("\n")
        assert 5 <= len(lines) <= 9
        same += sum(labels[int(line.split()[1])] == label for line in lines)
        total += len(lines)
    assert 0.6 < same / total < 0.8  # label_share 0.7


def test_synthetic_ner_sentences_are_well_formed_iob2_with_one_tag_per_word():
    rows = synthetic_ner_sentences(200, seed=0)
    found_types = set()
    for words, tags in zip(rows["tokens"], rows["ner_tags"], strict=True):
        assert len(words) == len(tags) and set(tags) <= set(CONLL2003_TAGS)
        # Read leniently and strictly, the entities agree only when every I-X continues a B-X/I-X.
        assert extract_entities(tags, "conlleval") == extract_entities(tags, "strict")
        found_types |= {entity_type for entity_type, _, _ in extract_entities(tags)}
    assert found_types == {"PER", "ORG", "LOC", "MISC"}
    assert synthetic_ner_sentences(5, seed=3).equals(synthetic_ner_sentences(5, seed=3))


def test_sentiment_triplets_and_pairs_judge_similarity_by_label():
    sentences = pd.DataFrame(
        {"sentence": [f"s{index}" for index in range(8)], "label": ["pos", "neg"] * 3 + ["pos", "pos"]}
    )
    label_of = dict(zip(sentences["sentence"], sentences["label"], strict=True))
    triplets = sentiment_triplets(sentences, seed=0)
    assert list(triplets.columns) == ["anchor", "positive", "negative"]
    assert triplets["anchor"].tolist() == sentences["sentence"].tolist()
    for anchor, positive, negative in triplets.itertuples(index=False):
        assert positive != anchor and label_of[positive] == label_of[anchor] != label_of[negative]
    pairs = sentiment_similarity_pairs(sentences, 50, seed=0)
    assert list(pairs.columns) == ["sentence1", "sentence2", "score"] and len(pairs) == 50
    for first, second, score in pairs.itertuples(index=False):
        assert first != second and score == float(label_of[first] == label_of[second])
    assert set(pairs["score"]) == {0.0, 1.0}


def test_samples_are_written_as_split_files_a_data_dir_reads(tmp_path):
    written = write_splits(
        {"train": synthetic_ner_sentences(4), "validation": synthetic_ner_sentences(2)}, tmp_path
    )
    assert sorted(path.name for path in written.iterdir()) == ["train.parquet", "validation.parquet"]
    assert (
        list(pd.read_parquet(written / "train.parquet")["tokens"].iloc[0])
        == synthetic_ner_sentences(4)["tokens"].iloc[0]
    )
    glue = quickstart_as_glue_sst2(REPO_ROOT / "data" / "quickstart", tmp_path / "glue")
    validation = pd.read_csv(glue / "sst2" / "validation.csv")
    original = pd.read_csv(REPO_ROOT / "data" / "quickstart" / "validation.csv")
    assert list(validation["sentence"]) == list(original["sentence"])
    assert list(validation["label"]) == [int(label == "positive") for label in original["label"]]


def test_plots_are_written_to_their_files(tmp_path):
    logged = pd.DataFrame(
        {"step": [0, 1, 1], "train/loss": [0.7, 0.6, None], "val/accuracy": [None, None, 0.6]}
    )
    plot_learning_curves({"run": logged}, ["train/loss", "val/accuracy", "val/f1"], tmp_path / "curves.png")
    figure = plot_confusion_matrix(
        np.array([[5, 1], [2, 7]]), ["no", "yes"], tmp_path / "plots" / "matrix.png"
    )
    assert sorted(text.get_text() for text in figure.axes[0].texts) == ["1", "2", "5", "7"]
    frame = pd.DataFrame({"length": [128, 256] * 2, "peak": [1.0, math.nan, 2.0, 3.0], "group": list("aabb")})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a NaN must not make matplotlib warn about log scales
        plot_versus(frame, "length", ["peak"], tmp_path / "versus.png", group="group", log_scale=True)
    for name in ("curves.png", "plots/matrix.png", "versus.png"):
        assert (tmp_path / name).stat().st_size > 1000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is measured through /proc")
def test_measure_call_sees_the_memory_a_call_allocates():
    def allocate_64_mib():
        return float(torch.ones(64 * 2**20 // 4).sum())

    measured = cost.measure_call(allocate_64_mib)
    assert measured["seconds"] > 0
    assert 60 <= measured["peak_mib"] <= 200
    assert cost.measure_call(lambda: None)["peak_mib"] < 16  # memory freed before is not counted again


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is measured through /proc")
def test_measure_once_calls_once_and_sees_its_memory():
    calls = []

    def allocate_64_mib():
        calls.append(1)
        return float(torch.ones(64 * 2**20 // 4).sum())

    measured = cost.measure_once(allocate_64_mib)
    assert calls == [1]  # a fit measured twice trained once and measured an empty second fit's memory
    assert measured["seconds"] > 0 and 60 <= measured["peak_mib"] <= 200


REPEATED_PEAKS = """
import json, torch
from neobert_tasks.analysis.cost import measure_call
from neobert_tasks.model import NeoBERTConfig, NeoBERTModel

torch.set_num_threads(1)  # each extra thread keeps scratch buffers of its own
torch.set_grad_enabled(False)
config = NeoBERTConfig(hidden_size=256, num_hidden_layers=2, num_attention_heads=4, intermediate_size=1024,
                       vocab_size=1000)
model = NeoBERTModel(config).eval()
input_ids = torch.randint(0, 1000, (2, 512))
lengths = (128, 512, 256, 512, 128, 512)
print(json.dumps([measure_call(lambda: model(input_ids=input_ids[:, :n]))["peak_mib"] for n in lengths]))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is measured through /proc")
def test_the_same_call_measures_the_same_peak_between_other_calls():
    # A model's forward frees and allocates blocks of 0.25-8 MiB; under glibc's adaptive mmap threshold
    # the same call's peak came out 28-46 MiB where it is 25 MiB, depending on what ran before it. The
    # resident set is the process's: run alone, as the notebooks' kernels are, for no other test's threads
    # (trackers' uploaders, loaders' workers) to allocate during the call.
    run = subprocess.run([sys.executable, "-c", REPEATED_PEAKS], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    peaks = json.loads(run.stdout.splitlines()[-1])
    assert max(peaks[1::2]) - min(peaks[1::2]) < 0.5, peaks
    assert peaks[0] < peaks[2] < peaks[1], peaks


def test_measure_call_gives_time_and_nan_memory_where_peaks_cannot_be_reset(tmp_path, monkeypatch):
    monkeypatch.setattr(cost, "CLEAR_REFS", tmp_path / "absent" / "clear_refs")
    measured = cost.measure_call(lambda: sum(range(1000)), repeats=3)
    assert measured["seconds"] > 0 and math.isnan(measured["peak_mib"])
