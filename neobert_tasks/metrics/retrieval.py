"""Retrieval: exact cosine search, the BEIR metrics of a ranking, and a BM25 baseline.

:func:`retrieval_scores` computes, for binary relevance, the numbers sentence-transformers'
``InformationRetrievalEvaluator`` reports (``cosine_ndcg@10``, ``cosine_mrr@10``, ``cosine_recall@100``,
``cosine_map@100``), with its conventions:

- A query counts only when it has at least one relevant document; the others are left out of every mean.
- A relevant document counts towards recall's denominator and the ideal DCG even if it is absent from
  the corpus (it can never be retrieved, so recall cannot reach 1).
- nDCG@10: gain 1 for a relevant document, discount ``log2(rank + 1)``; the ideal DCG puts
  ``min(relevant, 10)`` relevant documents first.
- MRR@10: the reciprocal rank of the first relevant document in the top 10, else 0.
- MAP@100: precision at each relevant hit in the top 100, summed and divided by ``min(relevant, 100)``.
- A document whose id equals the query id is kept (BEIR and MTEB drop it; the evaluator does not).

Rankings break equal scores by ascending corpus id, as the evaluator does, so that duplicate documents
(equal embeddings) rank the same here and there. :func:`top_k_by_cosine` breaks ties by ascending corpus
position; a caller that orders its corpus by id gets the evaluator's order.

:func:`bm25_rankings` is the lexical baseline (bm25s, the ``embeddings`` extra): Lucene's BM25 (k1 1.5,
b 0.75) over lowercased words of two or more letters or digits, English stopwords removed (bm25s' own
list, nothing downloaded), no stemming (a stemmer would be one more compiled dependency; BEIR's published
BM25, Elasticsearch with stemming, scores a little higher).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from neobert_tasks.metrics.similarity import cosine_precision

# The evaluator's defaults: nDCG and MRR at 10, recall and MAP at 100, so 100 documents per query.
RANKING_DEPTH = 100
RETRIEVAL_MAIN_METRIC = "ndcg@10"


def stable_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best columns of each row of ``scores``, ordered by descending score then ascending column.

    ``torch.topk`` breaks ties arbitrarily, also in which of several equal scores at the k-th place it
    keeps; the rows with such a tie are sorted in full (stable sort) so that the lowest columns win.
    """
    values, indices = scores.topk(k, dim=1)
    boundary_ties = (scores >= values[:, -1:]).sum(dim=1) > k
    if bool(boundary_ties.any()):
        tied_values, tied_indices = scores[boundary_ties].sort(dim=1, descending=True, stable=True)
        values[boundary_ties] = tied_values[:, :k]
        indices[boundary_ties] = tied_indices[:, :k]
    # Order the k candidates by column, then stably by score: equal scores end up in column order.
    indices, by_column = indices.sort(dim=1)
    values = values.gather(1, by_column)
    values, by_score = values.sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, by_score)


def top_k_by_cosine(
    query_embeddings: torch.Tensor, corpus_embeddings: torch.Tensor, k: int, chunk_size: int = 50_000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact nearest documents of each query by cosine similarity.

    The corpus is scored ``chunk_size`` documents at a time and only the best ``k`` per query are kept
    between chunks, so memory holds ``queries x chunk_size`` scores rather than ``queries x corpus``.
    Cosines are computed in the embeddings' precision (at least float32), as sentence-transformers does.

    Args:
        query_embeddings: ``(queries, dim)``.
        corpus_embeddings: ``(documents, dim)``, on the same device.
        k: documents per query; a corpus smaller than ``k`` gives all its documents.
        chunk_size: documents scored at once.

    Returns:
        ``(scores, indices)``, each ``(queries, min(k, documents))``, best first; equal scores are ordered
        by ascending document index, whatever ``chunk_size`` is (the matrix product of a chunk of another
        size may round a score's last bit differently, so equal embeddings in two chunks of different
        sizes may not tie).
    """
    if query_embeddings.ndim != 2 or corpus_embeddings.ndim != 2:
        raise ValueError("Query and corpus embeddings must be 2-D (rows, dim) tensors.")
    if query_embeddings.shape[1] != corpus_embeddings.shape[1]:
        raise ValueError(
            f"Query embeddings have dimension {query_embeddings.shape[1]} but corpus embeddings "
            f"{corpus_embeddings.shape[1]}."
        )
    if k < 1 or chunk_size < 1 or len(corpus_embeddings) == 0:
        raise ValueError(f"Need k >= 1, chunk_size >= 1 and a non-empty corpus (k={k}, chunk={chunk_size}).")
    dtype = cosine_precision(query_embeddings, corpus_embeddings)
    queries = F.normalize(query_embeddings.detach().to(dtype), p=2, dim=-1)
    best_scores = best_indices = None
    for start in range(0, len(corpus_embeddings), chunk_size):
        chunk = F.normalize(corpus_embeddings[start : start + chunk_size].detach().to(dtype), p=2, dim=-1)
        scores, indices = stable_top_k(queries @ chunk.T, min(k, len(chunk)))
        indices = indices + start
        if best_scores is not None:
            # Earlier chunks first: for equal scores, stable_top_k's column order is then the index order.
            scores = torch.cat([best_scores, scores], dim=1)
            indices = torch.cat([best_indices, indices], dim=1)
            scores, positions = stable_top_k(scores, min(k, scores.shape[1]))
            indices = indices.gather(1, positions)
        best_scores, best_indices = scores, indices
    return best_scores, best_indices


def retrieval_scores(rankings: dict[str, list[str]], relevant: dict[str, set[str]]) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100 and MAP@100 of rankings, averaged over the queries that count.

    Args:
        rankings: query id -> corpus ids, best first, at least 100 long when the corpus has 100 documents.
        relevant: query id -> ids of its relevant documents (binary relevance).

    Returns:
        ``{"ndcg@10", "mrr@10", "recall@100", "map@100"}`` as Python floats, averaged over the queries of
        ``rankings`` that have at least one relevant document (the module docstring has the definitions).

    Raises:
        ValueError: when no query of ``rankings`` has a relevant document, or a ranking repeats a document.
    """
    counted = [query for query in rankings if relevant.get(query)]
    if not counted:
        raise ValueError("No query of the rankings has a relevant document, so there is nothing to score.")
    totals = {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@100": 0.0, "map@100": 0.0}
    for query in counted:
        ranking, wanted = rankings[query][:RANKING_DEPTH], relevant[query]
        if len(set(ranking)) != len(ranking):
            raise ValueError(f"The ranking of query {query!r} lists a document more than once.")
        hits = [rank for rank, document in enumerate(ranking) if document in wanted]  # 0-based ranks
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(len(wanted), 10)))
        totals["ndcg@10"] += sum(1 / math.log2(rank + 2) for rank in hits if rank < 10) / ideal
        totals["mrr@10"] += 1 / (hits[0] + 1) if hits and hits[0] < 10 else 0.0
        totals["recall@100"] += len(hits) / len(wanted)
        # The n-th hit (1-based) at 0-based rank r contributes the precision n / (r + 1).
        precision_sum = sum((number + 1) / (rank + 1) for number, rank in enumerate(hits))
        totals["map@100"] += precision_sum / min(len(wanted), RANKING_DEPTH)
    return {metric: total / len(counted) for metric, total in totals.items()}


def bm25_rankings(
    queries: dict[str, str], corpus: dict[str, str], k: int = RANKING_DEPTH
) -> dict[str, list[str]]:
    """Rank the corpus for each query with BM25 (see the module docstring for the tokenization).

    Args:
        queries: query id -> text.
        corpus: document id -> text (for BEIR, title and text joined).
        k: documents per query (all of them when the corpus is smaller).

    Returns:
        query id -> the ``k`` best document ids, best first; equal scores (a query with no word in the
        corpus scores 0 everywhere) are ordered by ascending document id, as sentence-transformers does.
    """
    try:
        import bm25s  # imported on first use, so that the package works without the ``embeddings`` extra
    except ImportError as error:
        raise ImportError(
            "The BM25 baseline needs the bm25s package: pip install 'neobert_tasks[embeddings]'."
        ) from error
    if not corpus:
        raise ValueError("BM25 needs a non-empty corpus.")
    document_ids = sorted(corpus)
    options = {"lower": True, "stopwords": "en", "stemmer": None, "return_ids": False, "show_progress": False}
    retriever = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    retriever.index(bm25s.tokenize([corpus[i] for i in document_ids], **options), show_progress=False)
    query_ids = list(queries)
    query_tokens = bm25s.tokenize([queries[i] for i in query_ids], **options) if query_ids else []
    rankings: dict[str, list[str]] = {}
    block = 256  # queries whose full score rows are held at once
    for start in range(0, len(query_ids), block):
        rows = [
            torch.from_numpy(retriever.get_scores_from_ids(retriever.get_tokens_ids(tokens)))
            for tokens in query_tokens[start : start + block]
        ]
        _, indices = stable_top_k(torch.stack(rows), min(k, len(document_ids)))
        for query, row in zip(query_ids[start : start + block], indices.tolist(), strict=True):
            rankings[query] = [document_ids[i] for i in row]
    return rankings
