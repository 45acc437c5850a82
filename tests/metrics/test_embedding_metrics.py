"""Sentence-embedding evaluation: STS correlations and retrieval metrics equal sentence-transformers'
evaluators on the same embeddings; the loaders read the shared STS, BEIR and SQuAD files; BM25 baseline.

sentence-transformers' evaluators are run on a stand-in model that returns a fixed random vector per text
(what a deterministic model does), so both sides see exactly the same embeddings.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from neobert_tasks.data.sources import DataError, MissingDataError
from neobert_tasks.metrics import embedding_sets
from neobert_tasks.metrics.embedding_sets import (
    RetrievalSet,
    SimilaritySet,
    load_beir_set,
    load_similarity_set,
    load_squad_retrieval_set,
)
from neobert_tasks.metrics.retrieval import bm25_rankings, retrieval_scores, top_k_by_cosine
from neobert_tasks.metrics.similarity import similarity_scores
from tests.conftest import shared_path


class LookupModel:
    """The part of a ``SentenceTransformer`` its evaluators use, encoding each text as a fixed vector.

    A prompt is prepended to the text before the lookup, as the real model prepends it before tokenizing.
    """

    similarity_fn_name = "cosine"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        """Args: text -> its embedding."""
        self.vectors = vectors
        self.model_card_data = SimpleNamespace(set_evaluation_metrics=lambda *args, **kwargs: None)

    def encode(self, inputs, convert_to_tensor=False, prompt=None, **kwargs):
        """The vectors of ``inputs``, as a numpy array or (``convert_to_tensor``) a tensor."""
        rows = np.stack([self.vectors[(prompt or "") + text] for text in inputs])
        return torch.from_numpy(rows) if convert_to_tensor else rows

    encode_query = encode_document = encode

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity matrix, the model's similarity function."""
        from sentence_transformers.util import cos_sim

        return cos_sim(a, b)


def random_vectors(texts, dim: int = 16, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """A random vector per distinct text."""
    rng = np.random.default_rng(seed)
    return {text: rng.standard_normal(dim).astype(dtype) for text in dict.fromkeys(texts)}


def embed(texts: list[str], vectors: dict[str, np.ndarray]) -> torch.Tensor:
    """The ``(len(texts), dim)`` embeddings a task would hand to a set's ``score``."""
    return torch.from_numpy(np.stack([vectors[text] for text in texts]))


def st_retrieval(queries, corpus, relevant, vectors, **options) -> dict[str, float]:
    """sentence-transformers' InformationRetrievalEvaluator metrics, in this package's keys."""
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    evaluator = evaluation.InformationRetrievalEvaluator(
        queries, corpus, relevant, accuracy_at_k=[10], precision_recall_at_k=[10, 100], **options
    )
    metrics = evaluator(LookupModel(vectors))
    return {key: metrics[f"cosine_{key}"] for key in ("ndcg@10", "mrr@10", "recall@100", "map@100")}


def assert_close(ours: dict[str, float], theirs: dict[str, float], tolerance: float = 1e-6) -> None:
    """Every metric of ``theirs`` is within ``tolerance`` of ours."""
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=tolerance), key


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_similarity_equals_sentence_transformers_with_ties(dtype):
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    rng = np.random.default_rng(1)
    pairs = 300
    sentences1 = [f"first {i % 250}" for i in range(pairs)]  # repeated sentences
    sentences2 = [f"second {i}" for i in range(pairs)]
    sentences2[10:20] = sentences2[:10]  # pairs 10-19 repeat pairs 0-9 after the repeat above: tied cosines
    sentences1[10:20] = sentences1[:10]
    gold = (rng.integers(0, 11, pairs) / 2).tolist()  # STS-like 0.5 steps: many tied gold scores
    vectors = random_vectors(sentences1 + sentences2, seed=2, dtype=dtype)

    stsb = SimilaritySet("toy", sentences1, sentences2, gold)
    assert len(stsb.texts) == len(set(sentences1) | set(sentences2))
    ours = stsb.score(embed(stsb.texts, vectors))
    theirs = evaluation.EmbeddingSimilarityEvaluator(sentences1, sentences2, gold)(LookupModel(vectors))
    assert ours["spearman"] == pytest.approx(theirs["spearman_cosine"], abs=1e-6)
    assert ours["pearson"] == pytest.approx(theirs["pearson_cosine"], abs=1e-6)
    assert stsb.main_metric == "spearman"


def test_similarity_scores_match_scipy_in_float64():
    rng = np.random.default_rng(3)
    first, second = (
        torch.from_numpy(rng.standard_normal((500, 8))),
        torch.from_numpy(rng.standard_normal((500, 8))),
    )
    gold = np.round(rng.uniform(0, 5, 500), 1)
    cosines = torch.nn.functional.cosine_similarity(first, second).numpy()
    scores = similarity_scores(first, second, gold.tolist())
    assert scores["spearman"] == pytest.approx(spearmanr(gold, cosines)[0], abs=1e-12)
    assert scores["pearson"] == pytest.approx(pearsonr(gold, cosines)[0], abs=1e-12)


def test_retrieval_scores_by_hand():
    rankings = {"q1": ["a", "x", "b"], "q2": ["y", "c"], "q3": ["z"]}
    relevant = {"q1": {"a", "b"}, "q2": {"c", "absent"}, "q3": set()}  # q3 counts in nothing
    scores = retrieval_scores(rankings, relevant)
    ndcg1 = (1 + 1 / np.log2(4)) / (1 + 1 / np.log2(3))
    ndcg2 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert scores["ndcg@10"] == pytest.approx((ndcg1 + ndcg2) / 2)
    assert scores["mrr@10"] == pytest.approx((1 + 1 / 2) / 2)
    assert scores["recall@100"] == pytest.approx((1 + 1 / 2) / 2)
    assert scores["map@100"] == pytest.approx(((1 + 2 / 3) / 2 + (1 / 2) / 2) / 2)


def synthetic_collection(seed: int = 4):
    """250 documents (ten duplicated), 45 queries near their relevant documents, five with none."""
    rng = np.random.default_rng(seed)
    corpus = {f"d{i}": f"document {i}" for i in range(250)}
    corpus.update({f"d{i}": f"document {i - 240}" for i in range(240, 250)})  # same text: tied scores
    relevant: dict[str, set[str]] = {}
    for q in range(40):
        relevant[f"q{q}"] = {f"d{i}" for i in rng.choice(250, size=rng.integers(1, 5), replace=False)}
    relevant["q3"].add("not-in-corpus")  # counts in recall's denominator, as in sentence-transformers
    relevant["d7"] = {"d7", "d100"}  # a query whose id is a relevant document's: that document is kept
    relevant["q5"] = set()
    queries = {query: f"question {query}" for query in [*relevant, "q40", "q41", "q42", "q43"]}
    vectors = random_vectors(corpus.values(), seed=seed + 1)
    for query, documents in relevant.items():
        near = [vectors[corpus[d]] for d in documents if d in corpus] or [np.zeros(16, np.float32)]
        noise = rng.standard_normal(16).astype(np.float32)
        vectors[queries[query]] = np.mean(near, axis=0) + noise
    for query in ("q40", "q41", "q42", "q43"):
        vectors[queries[query]] = rng.standard_normal(16).astype(np.float32)
    return queries, corpus, relevant, vectors


def test_retrieval_equals_sentence_transformers_on_synthetic_corpus():
    queries, corpus, relevant, vectors = synthetic_collection()
    collection = RetrievalSet("toy", queries, corpus, relevant)
    assert len(collection.query_ids) == 40  # q5 and q40-q43 have no relevant document
    ours = collection.score(embed(collection.texts, vectors))
    assert 0.2 < ours["ndcg@10"] < 1  # neither trivial nor perfect
    assert_close(ours, st_retrieval(queries, corpus, relevant, vectors))


def test_retrieval_prefixes_are_the_evaluators_prompts():
    queries, corpus, relevant, vectors = synthetic_collection(seed=5)
    rng = np.random.default_rng(6)
    prefixed = {
        ("query: " + t if t.startswith("question") else "passage: " + t): v for t, v in vectors.items()
    }
    prefixed = {
        text: vector + rng.standard_normal(16).astype(np.float32) for text, vector in prefixed.items()
    }
    collection = RetrievalSet(
        "toy", queries, corpus, relevant, query_prefix="query: ", document_prefix="passage: "
    )
    ours = collection.score(embed(collection.texts, prefixed))
    theirs = st_retrieval(
        queries, corpus, relevant, prefixed, query_prompt="query: ", corpus_prompt="passage: "
    )
    assert_close(ours, theirs)


@pytest.fixture(scope="module")
def scifact() -> RetrievalSet:
    """SciFact's test split from ``../shared``."""
    return load_beir_set(str(shared_path("data", "retrieval", "scifact")))


def test_retrieval_equals_sentence_transformers_on_scifact(scifact):
    vectors = random_vectors(scifact.texts, dim=32, seed=7)
    ours = scifact.score(embed(scifact.texts, vectors))
    assert_close(ours, st_retrieval(scifact.queries, scifact.corpus, scifact.relevant, vectors))


def test_top_k_chunked_equals_unchunked_with_ties():
    rng = np.random.default_rng(8)
    corpus = torch.from_numpy(rng.standard_normal((103, 8)).astype(np.float32))
    corpus[50:60] = corpus[:10]  # duplicates across chunks: equal scores
    corpus[95:103] = corpus[90]
    queries = torch.cat([torch.from_numpy(rng.standard_normal((6, 8)).astype(np.float32)), corpus[90:91]])
    whole_scores, whole_indices = top_k_by_cosine(queries, corpus, k=25)
    chunk_scores, chunk_indices = top_k_by_cosine(queries, corpus, k=25, chunk_size=10)
    # The same documents; a matrix product of another shape may round a score's last bit differently.
    assert torch.equal(whole_indices, chunk_indices)
    torch.testing.assert_close(whole_scores, chunk_scores, rtol=0, atol=1e-6)
    # Best first, equal scores by ascending index: a full stable sort of the cosine matrix.
    cosines = torch.nn.functional.normalize(queries, dim=-1) @ torch.nn.functional.normalize(corpus, dim=-1).T
    expected = cosines.sort(dim=1, descending=True, stable=True).indices[:, :25]
    assert torch.equal(whole_indices, expected)
    assert top_k_by_cosine(queries, corpus, k=500, chunk_size=7)[1].shape == (7, 103)


def test_loaders_read_the_shared_files(scifact):
    assert (scifact.name, len(scifact.corpus), len(scifact.query_ids), scifact.main_metric) == (
        "scifact",
        5183,
        300,
        "ndcg@10",
    )
    assert len(scifact.texts) == 5483
    train = load_beir_set(str(shared_path("data", "retrieval", "scifact")), split="train")
    assert (train.name, len(train.query_ids)) == ("scifact_train", 809)
    for parts, name, pairs in [
        (("sts", "stsb", "test.parquet"), "stsb", 1379),
        (("sts", "sickr", "test.parquet"), "sickr", 4927),
        (("glue", "stsb", "validation.parquet"), "stsb_dev", 1500),  # GLUE's `label` column
    ]:
        sts = load_similarity_set(str(shared_path("data", *parts)))
        assert (sts.name, len(sts.scores), len(sts.first)) == (name, pairs, pairs)
    squad = load_squad_retrieval_set(str(shared_path("data", "squad", "validation.parquet")))
    assert (squad.name, len(squad.query_ids), len(squad.corpus)) == ("squad_dev", 10570, 2067)
    assert all(len(documents) == 1 for documents in squad.relevant.values())


def test_beir_jsonl_layout(tmp_path):
    (tmp_path / "qrels").mkdir()
    corpus = [
        {"_id": "007", "title": "Title", "text": "Body."},
        {"_id": "8", "title": "", "text": "Only text."},
    ]
    pd.DataFrame(corpus).to_json(tmp_path / "corpus.jsonl", orient="records", lines=True)
    pd.DataFrame([{"_id": "1", "text": "q one"}, {"_id": "2", "text": "q two"}]).to_json(
        tmp_path / "queries.jsonl", orient="records", lines=True
    )
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\n1\t007\t1\n2\t8\t0\n")
    collection = load_beir_set(str(tmp_path), split="dev")
    assert collection.name == f"{tmp_path.name}_dev"
    assert collection.corpus == {"007": "Title Body.", "8": "Only text."}
    assert collection.relevant == {"1": {"007"}}  # score 0 is not relevant
    assert collection.texts == ["q one", "Title Body.", "Only text."]


def test_judgements_of_documents_or_queries_the_files_lack_are_warned_of(tmp_path):
    (tmp_path / "qrels").mkdir()
    pd.DataFrame([{"_id": "d1", "text": "Body."}]).to_json(
        tmp_path / "corpus.jsonl", orient="records", lines=True
    )
    pd.DataFrame([{"_id": "q1", "text": "q"}]).to_json(
        tmp_path / "queries.jsonl", orient="records", lines=True
    )
    judgements = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td9\t1\nq7\td1\t1\n"
    (tmp_path / "qrels" / "test.tsv").write_text(judgements)
    with pytest.warns(UserWarning) as caught:
        collection = load_beir_set(str(tmp_path))
    assert [str(warning.message) for warning in caught] == [
        f"1 of the 3 relevant documents in {tmp_path / 'qrels' / 'test.tsv'} are not in"
        f" {tmp_path / 'corpus.jsonl'} (e.g. 'd9'); they count as never retrieved.",
        f"1 of the 2 judged queries in {tmp_path / 'qrels' / 'test.tsv'} are not in"
        f" {tmp_path / 'queries.jsonl'} (e.g. 'q7'); they are not evaluated.",
    ]
    assert collection.query_ids == ["q1"] and collection.relevant["q1"] == {"d1", "d9"}


def test_missing_files_and_columns_are_named(tmp_path):
    path = tmp_path / "pairs.csv"
    pd.DataFrame({"sentence1": ["a", "b"], "score": [1.0, 2.0]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"pairs\.csv' has no column 'sentence2'"):
        load_similarity_set(str(path))
    pd.DataFrame({"sentence1": ["a", "b"], "sentence2": ["c", "d"]}).to_parquet(tmp_path / "test.parquet")
    with pytest.raises(DataError, match=r"test\.parquet' has no column 'score' \(nor GLUE's 'label'\)"):
        load_similarity_set(str(tmp_path / "test.parquet"))
    with pytest.raises(MissingDataError, match="absent.parquet' does not exist"):
        load_similarity_set(str(tmp_path / "absent.parquet"))
    pd.DataFrame({"_id": ["1"], "text": ["t"]}).to_parquet(tmp_path / "corpus.parquet")
    pd.DataFrame({"_id": ["1"], "text": ["q"]}).to_parquet(tmp_path / "queries.parquet")
    with pytest.raises(MissingDataError, match=r"has no qrels_test\.parquet or qrels/test\.tsv"):
        load_beir_set(str(tmp_path))
    pd.DataFrame({"query-id": ["1"], "corpus-id": ["1"]}).to_parquet(tmp_path / "qrels_test.parquet")
    with pytest.raises(DataError, match=r"qrels_test\.parquet' has no column 'score'"):
        load_beir_set(str(tmp_path))
    pd.DataFrame({"id": ["1"], "context": ["c"]}).to_parquet(tmp_path / "squad.parquet")
    with pytest.raises(DataError, match=r"squad\.parquet' has no column 'question'"):
        load_squad_retrieval_set(str(tmp_path / "squad.parquet"))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl"])
def test_an_empty_sentence_of_a_similarity_set_is_refused_in_any_format(tmp_path, suffix):
    """CSV and TSV cells are read as text, so an empty one was an empty sentence, scored without a word."""
    frame = pd.DataFrame({"sentence1": ["a cat", "a dog", "  "], "sentence2": ["a cat", "", "a bird"]})
    frame["score"] = [1.0, 0.5, 0.0]
    path = tmp_path / f"sts{suffix}"
    if suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
    with pytest.raises(DataError, match=rf"sts\{suffix}' column 'sentence1' is empty in row 2 \(from 0\)"):
        load_similarity_set(str(path))


def test_bm25_on_scifact(scifact):
    pytest.importorskip("bm25s")
    scores = scifact.bm25_scores()
    # BEIR's published BM25 (Elasticsearch, with stemming) is 0.665; here 0.662 without stemming.
    assert 0.62 < scores["ndcg@10"] < 0.70
    assert 0.80 < scores["recall@100"] < 0.95
    assert scifact.bm25_scores() == scores


def test_bm25_ranks_by_words_and_breaks_ties_by_id(monkeypatch):
    pytest.importorskip("bm25s")
    corpus = {"b": "The cat sat on the mat.", "a": "Dogs bark at night.", "c": "A cat and a dog."}
    rankings = bm25_rankings({"q1": "Where is the CAT?", "q2": "the and of"}, corpus, k=2)
    assert rankings["q1"][0] in {"b", "c"} and set(rankings["q1"]) == {"b", "c"}
    assert rankings["q2"] == ["a", "b"]  # stopwords only: all scores 0, ascending id
    monkeypatch.setitem(sys.modules, "bm25s", None)
    with pytest.raises(ImportError, match=r"neobert_tasks\[embeddings\]"):
        bm25_rankings({"q": "cat"}, corpus)


def test_bm25_scores_are_cached(monkeypatch):
    queries, corpus, relevant, _ = synthetic_collection()
    calls = []

    def rankings(queries, corpus):
        calls.append(1)
        return {query: sorted(corpus)[:100] for query in queries}

    monkeypatch.setattr(embedding_sets, "bm25_rankings", rankings)
    collection = RetrievalSet("toy", queries, corpus, relevant)
    assert collection.bm25_scores() == collection.bm25_scores() and len(calls) == 1


def test_score_refuses_embeddings_of_another_size():
    pairs = SimilaritySet("toy", ["a", "b"], ["c", "d"], [1.0, 2.0])
    with pytest.raises(ValueError, match="has 4 texts but got embeddings of shape"):
        pairs.score(torch.zeros(3, 4))


def write_beir(folder, corpus: list[dict], queries: list[dict], judgements: str) -> str:
    (folder / "qrels").mkdir(parents=True)
    pd.DataFrame(corpus).to_json(folder / "corpus.jsonl", orient="records", lines=True)
    pd.DataFrame(queries).to_json(folder / "queries.jsonl", orient="records", lines=True)
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + judgements)
    return str(folder)


def test_repeated_ids_are_refused_by_file_column_and_value(tmp_path):
    """A repeated id kept its last row and dropped the others silently (another document or query scored)."""
    documents = [{"_id": "d0", "text": "zero"}, {"_id": "d1", "text": "one"}, {"_id": "d1", "text": "uno"}]
    queries = [{"_id": "q0", "text": "a"}, {"_id": "q1", "text": "b"}]
    folder = write_beir(tmp_path / "corpus_ids", documents, queries, "q0\td0\t1\nq1\td1\t1\n")
    with pytest.raises(DataError, match=r"corpus\.jsonl' column '_id' repeats the id 'd1' \(2 rows\); each"):
        load_beir_set(folder)
    queries += [{"_id": "q1", "text": "c"}]
    folder = write_beir(tmp_path / "query_ids", documents[:2], queries, "q0\td0\t1\nq1\td1\t1\n")
    with pytest.raises(DataError, match=r"queries\.jsonl' column '_id' repeats the id 'q1' \(2 rows\)"):
        load_beir_set(folder)
    squad = tmp_path / "squad.parquet"
    pd.DataFrame({"id": ["a", "a"], "question": ["q", "r"], "context": ["c", "d"]}).to_parquet(squad)
    with pytest.raises(DataError, match=r"squad\.parquet' column 'id' repeats the id 'a' \(2 rows\)"):
        load_squad_retrieval_set(str(squad))


def test_judgements_that_match_no_query_and_empty_documents_are_named(tmp_path):
    documents = [{"_id": "d0", "title": "", "text": "zero"}, {"_id": "d9", "title": "", "text": ""}]
    queries = [{"_id": "q0", "text": "a"}]
    folder = write_beir(tmp_path / "unmatched", documents, queries, "qA\td0\t1\n")
    with (
        pytest.warns(UserWarning, match="judged queries"),
        pytest.raises(
            DataError,
            match=r"None of the 1 queries with a relevant document in .*test\.tsv is in .*queries\.jsonl",
        ),
    ):
        load_beir_set(folder)
    folder = write_beir(tmp_path / "empty", documents, queries, "q0\td0\t1\n")
    with pytest.warns(UserWarning, match=r"^1 documents of .*corpus\.jsonl have no title and no text\.$"):
        load_beir_set(folder)
