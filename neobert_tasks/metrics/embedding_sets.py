"""The evaluation sets a sentence-embedding model is validated on: STS pairs and retrieval collections.

Each set lists in ``texts`` every text the model must encode; the caller encodes them in that order and
passes the ``(len(texts), dim)`` embeddings to ``score``, which returns the set's metrics (keys below),
logged as ``val/<name>/<metric>``:

==================  =========================================  ==========  ===================================
set                 metrics                                    main        default name
==================  =========================================  ==========  ===================================
``SimilaritySet``   spearman, pearson (of the cosines)         spearman    ``stsb`` (sts/stsb/test.parquet),
                                                                           ``sickr``, ``stsb_dev`` (GLUE dev)
``RetrievalSet``    ndcg@10, mrr@10, recall@100, map@100       ndcg@10     ``scifact`` (test split),
                                                                           ``scifact_train``, ``squad_dev``
==================  =========================================  ==========  ===================================

A file's set is named after its folder, with ``_dev`` or ``_train`` added for those splits (a test split
is the benchmark's reported number, so it gets the bare name); a file not named after a split is named
after itself. The metrics equal those of sentence-transformers' ``EmbeddingSimilarityEvaluator`` and
``InformationRetrievalEvaluator`` on the same embeddings (see :mod:`neobert_tasks.metrics.similarity`
and :mod:`neobert_tasks.metrics.retrieval`).

BEIR documents are ``title + " " + text``, stripped, as BEIR's and MTEB's dense-model wrappers and the
sentence-transformers documentation build them (an empty title leaves the text alone). Relevant means a
qrels score above 0.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from neobert_tasks.data.sources import DataError, MissingDataError, check_csv_rows
from neobert_tasks.metrics.retrieval import (
    RANKING_DEPTH,
    RETRIEVAL_MAIN_METRIC,
    bm25_rankings,
    retrieval_scores,
    top_k_by_cosine,
)
from neobert_tasks.metrics.similarity import similarity_scores

# A split's suffix in a set's name; the test split is the benchmark itself.
_SPLIT_SUFFIXES = {"test": "", "validation": "_dev", "dev": "_dev", "train": "_train"}


def _check_embeddings(name: str, texts: list[str], embeddings: torch.Tensor) -> None:
    """Raise ``ValueError`` unless ``embeddings`` has one row per text of the set."""
    if embeddings.ndim != 2 or len(embeddings) != len(texts):
        raise ValueError(
            f"Set {name!r} has {len(texts)} texts but got embeddings of shape {tuple(embeddings.shape)}."
        )


class SimilaritySet:
    """Sentence pairs with gold similarity scores (STS-B, SICK-R), scored by their embeddings' cosines.

    ``texts`` holds each distinct sentence once, in order of first appearance, and pairs index into it:
    SICK-R's 4,927 pairs have 5,007 distinct sentences, not 9,854, so encoding halves; and a sentence gets
    one vector wherever it appears, as it would from a deterministic model.
    """

    main_metric = "spearman"

    def __init__(
        self, name: str, sentences1: Sequence[str], sentences2: Sequence[str], scores: Sequence[float]
    ) -> None:
        """Args: the set's name, the two sentences of each pair and the pair's gold score, aligned."""
        if not len(sentences1) == len(sentences2) == len(scores):
            raise ValueError(
                f"Set {name!r} has {len(sentences1)} first sentences, {len(sentences2)} second sentences "
                f"and {len(scores)} scores; they must be aligned."
            )
        self.name = name
        self.scores = [float(score) for score in scores]
        positions: dict[str, int] = {}
        self.first = torch.tensor([positions.setdefault(text, len(positions)) for text in sentences1])
        self.second = torch.tensor([positions.setdefault(text, len(positions)) for text in sentences2])
        self.texts: list[str] = list(positions)

    def score(self, embeddings: torch.Tensor) -> dict[str, float]:
        """``spearman`` and ``pearson`` of the pairs' cosine similarities with the gold scores."""
        _check_embeddings(self.name, self.texts, embeddings)
        first, second = self.first.to(embeddings.device), self.second.to(embeddings.device)
        return similarity_scores(embeddings[first], embeddings[second], self.scores)


class RetrievalSet:
    """Queries, a corpus and relevance judgements, scored by exact cosine search over the whole corpus.

    Only queries with a relevant document are kept (the others count in no metric). ``texts`` is those
    queries, each with ``query_prefix``, then every document, with ``document_prefix``, in ascending id
    order: :func:`top_k_by_cosine` breaks equal scores by position, so duplicate documents then rank in
    sentence-transformers' order (ascending id).
    """

    main_metric = RETRIEVAL_MAIN_METRIC

    def __init__(
        self,
        name: str,
        queries: dict[str, str],
        corpus: dict[str, str],
        relevant: dict[str, set[str]],
        query_prefix: str = "",
        document_prefix: str = "",
    ) -> None:
        """Args: the set's name; query id -> text; document id -> text; query id -> relevant document
        ids; and the prefixes (an instruction such as ``"query: "``) the model expects, not used by BM25."""
        self.name = name
        self.relevant = {query: set(documents) for query, documents in relevant.items() if documents}
        self.query_ids = [query for query in queries if query in self.relevant]
        if not self.query_ids or not corpus:
            raise DataError(f"Retrieval set {name!r} has no corpus or no query with a relevant document.")
        self.queries = {query: queries[query] for query in self.query_ids}
        self.corpus_ids = sorted(corpus)
        self.corpus = {document: corpus[document] for document in self.corpus_ids}
        self.texts: list[str] = [query_prefix + self.queries[query] for query in self.query_ids]
        self.texts += [document_prefix + self.corpus[document] for document in self.corpus_ids]
        self._bm25: dict[str, float] | None = None

    def rankings(self, embeddings: torch.Tensor, k: int = RANKING_DEPTH) -> dict[str, list[str]]:
        """Query id -> the ``k`` document ids nearest by cosine, best first."""
        _check_embeddings(self.name, self.texts, embeddings)
        queries, documents = embeddings[: len(self.query_ids)], embeddings[len(self.query_ids) :]
        _, indices = top_k_by_cosine(queries, documents, k=min(k, len(self.corpus_ids)))
        return {
            query: [self.corpus_ids[i] for i in row]
            for query, row in zip(self.query_ids, indices.tolist(), strict=True)
        }

    def score(self, embeddings: torch.Tensor) -> dict[str, float]:
        """``ndcg@10``, ``mrr@10``, ``recall@100`` and ``map@100`` of the cosine rankings."""
        return retrieval_scores(self.rankings(embeddings), self.relevant)

    def bm25_scores(self) -> dict[str, float]:
        """The same metrics for BM25's rankings (needs bm25s); computed once, then cached."""
        if self._bm25 is None:
            self._bm25 = retrieval_scores(bm25_rankings(self.queries, self.corpus), self.relevant)
        return dict(self._bm25)


def read_table(path: str | Path) -> pd.DataFrame:
    """All rows of a ``.parquet``, ``.csv``, ``.tsv``, ``.jsonl`` or ``.json`` file.

    CSV and TSV fields are read as text, so that ids such as ``007`` stay as written; rows whose field
    count differs from the header's are refused with their line (:func:`check_csv_rows`).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"File '{path}' does not exist.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".tsv"):
            delimiter = "\t" if suffix == ".tsv" else ","
            check_csv_rows(path, delimiter)
            return pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, index_col=False)
        if suffix in (".jsonl", ".json"):
            return pd.read_json(path, lines=suffix == ".jsonl", dtype=False)
    except DataError:
        raise
    except (ValueError, OSError, pa.ArrowException) as error:
        raise DataError(f"File '{path}' could not be read: {error}") from error
    raise DataError(f"File '{path}' is not a .parquet, .csv, .tsv, .jsonl or .json file.")


def _column(frame: pd.DataFrame, column: str, path: Path, allow_empty: bool = False) -> pd.Series:
    """The column, or a ``DataError`` naming it and the file when it is absent or has an empty cell (null,
    or, unless ``allow_empty``, blank: CSV and TSV cells are read as text, an empty one as "")."""
    if column not in frame.columns:
        found = ", ".join(map(str, frame.columns))
        raise DataError(f"File '{path}' has no column '{column}' (its columns: {found}).")
    missing = frame[column].isna().to_numpy()
    if not allow_empty:
        missing = missing | frame[column].astype(str).str.strip().eq("").to_numpy()
    if missing.any():
        raise DataError(f"File '{path}' column '{column}' is empty in row {int(missing.argmax())} (from 0).")
    return frame[column]


def _strings(frame: pd.DataFrame, column: str, path: Path, allow_empty: bool = False) -> list[str]:
    """The column's values as strings (ids that a parquet file stores as integers included)."""
    return [str(value) for value in _column(frame, column, path, allow_empty)]


def _unique_ids(frame: pd.DataFrame, column: str, path: Path) -> list[str]:
    """The column's ids as strings, or a ``DataError`` naming the first repeated one: the mappings built
    from them would keep its last row and drop the others without a word."""
    ids = _strings(frame, column, path)
    counts = Counter(ids)
    if repeated := [value for value, count in counts.items() if count > 1]:
        more = f" ({len(repeated)} ids repeat)" if len(repeated) > 1 else ""
        raise DataError(
            f"File '{path}' column '{column}' repeats the id {repeated[0]!r} ({counts[repeated[0]]} rows)"
            f"{more}; each row needs an id of its own."
        )
    return ids


def _numbers(frame: pd.DataFrame, column: str, path: Path) -> list[float]:
    """The column's values as floats, or a ``DataError`` naming the first row that is not a finite number."""
    values = pd.to_numeric(_column(frame, column, path), errors="coerce").astype(float)
    bad = ~np.isfinite(values.to_numpy())
    if bad.any():
        row = int(bad.argmax())
        raise DataError(f"File '{path}' column '{column}' row {row} (from 0) is not a finite number.")
    return values.tolist()


def _named(base: str, split: str) -> str:
    """``base`` for a test split, ``base_dev`` for validation/dev, ``base_<split>`` for any other split."""
    return base + _SPLIT_SUFFIXES.get(split, f"_{split}")


def load_similarity_set(path: str, name: str | None = None) -> SimilaritySet:
    """An STS set from a file with ``sentence1``, ``sentence2`` and ``score`` (or GLUE STS-B's ``label``).

    Args:
        path: a ``.parquet``, ``.csv``, ``.tsv`` or ``.jsonl`` file.
        name: the set's name; by default its folder's (``sts/stsb/test.parquet`` is ``stsb``,
            ``glue/stsb/validation.parquet`` is ``stsb_dev``), or the file's when not named after a split.
    """
    file = Path(path)
    frame = read_table(file)
    score_column = "score" if "score" in frame.columns or "label" not in frame.columns else "label"
    if score_column not in frame.columns:
        found = ", ".join(map(str, frame.columns))
        raise DataError(f"File '{file}' has no column 'score' (nor GLUE's 'label') (its columns: {found}).")
    sentences1, sentences2 = _strings(frame, "sentence1", file), _strings(frame, "sentence2", file)
    scores = _numbers(frame, score_column, file)
    if len(set(scores)) < 2:
        # GLUE's test split has hidden labels (-1 everywhere); a correlation with constants is undefined.
        raise DataError(f"File '{file}' column '{score_column}' has fewer than two distinct scores.")
    if name is None:
        name = _named(file.resolve().parent.name, file.stem) if file.stem in _SPLIT_SUFFIXES else file.stem
    return SimilaritySet(name, sentences1, sentences2, scores)


def _first_existing(directory: Path, candidates: Sequence[str]) -> Path:
    """The first of ``candidates`` (relative paths) present in ``directory``, or a ``MissingDataError``."""
    for candidate in candidates:
        if (directory / candidate).is_file():
            return directory / candidate
    raise MissingDataError(f"Directory '{directory}' has no {' or '.join(candidates)}.")


def load_beir_set(directory: str, split: str = "test", name: str | None = None) -> RetrievalSet:
    """A BEIR collection: ``corpus``, ``queries`` and the split's qrels.

    Args:
        directory: holds ``corpus.parquet`` (``_id``, ``title``, ``text``), ``queries.parquet`` (``_id``,
            ``text``) and ``qrels_<split>.parquet`` (``query-id``, ``corpus-id``, ``score``), or BEIR's own
            ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: the qrels split; only its queries with a relevant document are evaluated.
        name: the set's name; by default the directory's, plus ``_dev``/``_<split>`` when not ``test``.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise MissingDataError(f"BEIR directory '{folder}' does not exist or is not a directory.")
    corpus_file = _first_existing(folder, ["corpus.parquet", "corpus.jsonl"])
    queries_file = _first_existing(folder, ["queries.parquet", "queries.jsonl"])
    qrels_file = _first_existing(folder, [f"qrels_{split}.parquet", f"qrels/{split}.tsv"])

    corpus_frame = read_table(corpus_file)
    texts = _strings(corpus_frame, "text", corpus_file, allow_empty=True)  # with a title, or counted below
    # Some BEIR corpora leave titles out or empty; a missing title is an empty one.
    titles = corpus_frame["title"].fillna("").astype(str) if "title" in corpus_frame else [""] * len(texts)
    ids = _unique_ids(corpus_frame, "_id", corpus_file)
    corpus = {doc: f"{title} {text}".strip() for doc, title, text in zip(ids, titles, texts, strict=True)}

    queries_frame = read_table(queries_file)
    query_ids = _unique_ids(queries_frame, "_id", queries_file)
    queries = dict(zip(query_ids, _strings(queries_frame, "text", queries_file), strict=True))

    qrels = read_table(qrels_file)
    relevant: dict[str, set[str]] = {}
    columns = [_strings(qrels, "query-id", qrels_file), _strings(qrels, "corpus-id", qrels_file)]
    for query, document, score in zip(*columns, _numbers(qrels, "score", qrels_file), strict=True):
        if score > 0:
            relevant.setdefault(query, set()).add(document)
    warn_of_unknown_ids(relevant, queries, corpus, qrels_file, queries_file, corpus_file)
    if not relevant:
        raise DataError(f"{qrels_file} judges no document relevant (no row with a score above 0).")
    if not any(query in queries for query in relevant):
        raise DataError(
            f"None of the {len(relevant)} queries with a relevant document in {qrels_file} is in"
            f" {queries_file}: nothing to evaluate (files of different collections?)."
        )
    if empty := sum(not text for text in corpus.values()):
        warnings.warn(f"{empty} documents of {corpus_file} have no title and no text.", stacklevel=2)
    return RetrievalSet(name or _named(folder.resolve().name, split), queries, corpus, relevant)


def warn_of_unknown_ids(
    relevant: dict[str, set[str]],
    queries: dict,
    corpus: dict,
    qrels: Path,
    queries_file: Path,
    corpus_file: Path,
) -> None:
    """Warn of judgements that name a document the corpus lacks (no ranking can retrieve it, so recall and
    nDCG count it as missed, as sentence-transformers' evaluator does) or a query the queries file lacks
    (not evaluated): both are usually files of different versions of a collection."""
    judged = [(query, document) for query, documents in relevant.items() for document in sorted(documents)]
    absent_documents = [document for _, document in judged if document not in corpus]
    if absent_documents:
        warnings.warn(
            f"{len(absent_documents)} of the {len(judged)} relevant documents in {qrels} are not in"
            f" {corpus_file} (e.g. {absent_documents[0]!r}); they count as never retrieved.",
            stacklevel=3,
        )
    absent_queries = sorted(query for query in relevant if query not in queries)
    if absent_queries:
        warnings.warn(
            f"{len(absent_queries)} of the {len(relevant)} judged queries in {qrels} are not in"
            f" {queries_file} (e.g. {absent_queries[0]!r}); they are not evaluated.",
            stacklevel=3,
        )


def load_squad_retrieval_set(path: str, name: str = "squad_dev") -> RetrievalSet:
    """Question -> paragraph retrieval from a SQuAD split file (columns ``id``, ``question``, ``context``).

    The corpus is the split's distinct paragraphs, ids ``0``, ``1``, ... zero-padded to one width so that
    id order is order of first appearance; each question's one relevant document is its own paragraph.
    """
    file = Path(path)
    frame = read_table(file)
    question_ids, questions = _unique_ids(frame, "id", file), _strings(frame, "question", file)
    contexts = _strings(frame, "context", file)
    positions = {context: position for position, context in enumerate(dict.fromkeys(contexts))}
    width = len(str(max(len(positions) - 1, 0)))
    corpus = {str(position).zfill(width): context for context, position in positions.items()}
    relevant = {
        question: {str(positions[context]).zfill(width)}
        for question, context in zip(question_ids, contexts, strict=True)
    }
    return RetrievalSet(name, dict(zip(question_ids, questions, strict=True)), corpus, relevant)
