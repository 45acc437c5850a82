"""What an embedding datamodule validates and tests on: evaluation sets, and loaders over their texts; and
the texts ``predict`` embeds.

An evaluation set is named by a path, and its kind follows from what the path holds:

- a directory: a BEIR retrieval collection (``corpus``, ``queries``, ``qrels/<split>``), scored on the
  qrels split ``retrieval_split``;
- a file with ``question`` and ``context`` columns: SQuAD question → paragraph retrieval;
- any other file: STS pairs (``sentence1``, ``sentence2``, ``score`` or GLUE's ``label``).

Each set becomes one evaluation dataloader over its texts (`EvaluationSet.texts`), longest first, each row
carrying its position in that list as ``example_index``; the embedding task embeds them and hands the set
the ``(texts, dim)`` matrix to score (`neobert_tasks.metrics.embedding_sets`).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import datasets
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from neobert_tasks.data.collator import ModelInputCollator
from neobert_tasks.data.keys import ATTENTION_MASK, EXAMPLE_INDEX, INPUT_IDS
from neobert_tasks.data.loaders import evaluation_loader
from neobert_tasks.data.sources import DataError, MissingDataError
from neobert_tasks.data.text_encoding import encode_texts
from neobert_tasks.metrics.embedding_sets import (
    RetrievalSet,
    SimilaritySet,
    load_beir_set,
    load_similarity_set,
    load_squad_retrieval_set,
    read_table,
)

EvaluationSet = SimilaritySet | RetrievalSet
SQUAD_COLUMNS = ("question", "context")


def load_evaluation_set(
    path: str,
    *,
    retrieval_split: str = "test",
    query_prefix: str = "",
    document_prefix: str = "",
    limit: int | None = None,
    option: str = "eval_sets",
) -> EvaluationSet:
    """The evaluation set at ``path`` (kind from its content, see the module docstring), with the
    instruction prefixes on retrieval queries and documents, cut to its first ``limit`` pairs or queries;
    ``option`` names the setting that lists it, for the message when it is missing."""
    location = Path(path).expanduser()
    if not location.exists():
        raise MissingDataError(f"Evaluation set '{path}' (data.init_args.{option}) does not exist.")
    if location.is_dir():
        evaluation_set = load_beir_set(str(location), split=retrieval_split)
    elif all(column in read_table(location).columns for column in SQUAD_COLUMNS):
        # ``squad_dev`` for SQuAD's validation file, ``squad_<split>`` for another split's.
        name = "squad_dev" if location.stem in ("validation", "dev") else f"squad_{location.stem}"
        evaluation_set = load_squad_retrieval_set(str(location), name=name)
    else:
        evaluation_set = load_similarity_set(str(location))
    if isinstance(evaluation_set, SimilaritySet):
        if limit is None or limit >= len(evaluation_set.scores):
            return evaluation_set
        texts = evaluation_set.texts
        cut = SimilaritySet(
            evaluation_set.name,
            [texts[i] for i in evaluation_set.first[:limit].tolist()],
            [texts[i] for i in evaluation_set.second[:limit].tolist()],
            evaluation_set.scores[:limit],
        )
        cut.limited_from = len(evaluation_set.scores)  # pairs before the cut, for the partial-set warning
        return cut
    cut = RetrievalSet(
        evaluation_set.name,
        {query: evaluation_set.queries[query] for query in evaluation_set.query_ids[:limit]},
        evaluation_set.corpus,  # the whole corpus: fewer documents would make retrieval easier
        evaluation_set.relevant,
        query_prefix=query_prefix,
        document_prefix=document_prefix,
    )
    if limit is not None and limit < len(evaluation_set.query_ids):
        cut.limited_from = len(evaluation_set.query_ids)  # queries before the cut
    return cut


def load_evaluation_sets(paths: list[str], **options) -> list[EvaluationSet]:
    """`load_evaluation_set` of each path; two sets of one name would log over each other, so refuse."""
    sets = [load_evaluation_set(path, **options) for path in paths]
    counts = Counter(evaluation_set.name for evaluation_set in sets)
    if repeated := sorted(name for name, count in counts.items() if count > 1):
        raise DataError(f"Evaluation sets {paths} give the same name twice ({', '.join(repeated)}).")
    return sets


def tokenized_texts(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int
) -> datasets.Dataset:
    """One row per text: its ``input_ids``, ``attention_mask`` and position (``example_index``)."""
    positions = list(range(len(texts)))
    encoded = encode_texts({"text": texts}, positions, tokenizer=tokenizer, max_length=max_length)
    return datasets.Dataset.from_dict(encoded)


class EvaluationSetLoaders:
    """Evaluation sets as validation and test loaders, ahead of the pair splits' loaders, for a datamodule
    that sets ``eval_sets`` and ``test_sets`` (lists of paths) and the options of `TokenizedDataModule`."""

    eval_sets: list[str]
    test_sets: list[str] | None
    predict_column: str
    retrieval_split: str
    query_prefix: str
    document_prefix: str

    def evaluation_sets_for(self, stage: str) -> list[EvaluationSet]:
        """The sets that ``stage`` (``fit``, ``validate`` or ``test``) scores, loaded on first use."""
        testing = stage == "test" and self.test_sets is not None
        paths = self.test_sets if testing else self.eval_sets
        if stage == "fit":  # a missing test set would otherwise surface only at `test`, after the fit
            missing = [path for path in self.test_sets or () if not Path(path).expanduser().exists()]
            warned = self.__dict__.setdefault("_warned_missing_test_sets", [])
            if missing and not warned:  # once per datamodule
                warned.append(missing[0])
                rank_zero_warn(
                    f"Evaluation set '{missing[0]}' (data.init_args.test_sets) does not exist: this fit needs"
                    " none, but `test` of its checkpoints will (give --data.init_args.test_sets then)."
                )
        key = () if stage == "predict" else tuple(paths)
        cache = self.__dict__.setdefault("_evaluation_sets", {})
        if key not in cache:
            cache[key] = load_evaluation_sets(
                list(key),
                retrieval_split=self.retrieval_split,
                query_prefix=self.query_prefix,
                document_prefix=self.document_prefix,
                limit=self.limit_eval_samples,
                option="test_sets" if testing else "eval_sets",
            )
        for evaluation_set in cache[key]:
            if total := getattr(evaluation_set, "limited_from", None):
                kept = len(getattr(evaluation_set, "query_ids", None) or evaluation_set.scores)
                self.evaluation_cuts[evaluation_set.name] = (kept, total)
        return cache[key]

    def split_names_for(self, stage: str) -> list[str]:
        """Name of each dataloader of ``stage``: the evaluation sets', then the pair splits'."""
        sets = [evaluation_set.name for evaluation_set in self.evaluation_sets_for(stage)]
        return [*sets, *super().split_names_for(stage)]

    def setup(self, stage: str | None = None) -> None:
        """As `TokenizedDataModule.setup`; ``validate`` and ``test`` need no pair split when sets are scored,
        and ``predict`` needs a predict file."""
        if stage == "predict" and self.predict_file is None:
            raise DataError("Embedding predictions embed the texts of data.init_args.predict_file; set it.")
        wanted, required, _ = self._stage_requirements(stage)
        if stage in ("validate", "test") and not required and not self.present_splits(wanted):
            return  # evaluation sets only: no pair split to load
        super().setup(stage)

    def predict_texts(self, split_name: str) -> dict[int, str]:
        """Per example index (row of the file), the predicted text: a parquet prediction keeps it beside its
        vector."""
        rows = self.examples(split_name)
        indices = rows[EXAMPLE_INDEX][:] if EXAMPLE_INDEX in rows.column_names else range(len(rows))
        return dict(zip(indices, rows[self.predict_column][:], strict=True))  # `[:]`: the column at once

    @property
    def prompts(self) -> dict[str, str]:
        """The instruction prefixes as sentence-transformers prompts, which an export keeps: its
        ``encode_query`` and ``encode_document`` put them before the texts as training did."""
        prefixes = {"query": self.query_prefix, "document": self.document_prefix}
        return {name: prefix for name, prefix in prefixes.items() if prefix}

    def _stage_requirements(self, stage: str | None) -> tuple[list[str], list[str], bool]:
        wanted, required, any_of = super()._stage_requirements(stage)
        if stage in ("validate", "test") and self.evaluation_sets_for(stage):
            return wanted, [], False  # the evaluation sets are enough; a pair split is scored if present
        return wanted, required, any_of

    @property
    def main_metric(self) -> str | None:
        """What ``monitor: auto`` watches: the first validation set's main metric (``stsb_dev/spearman``),
        else the pair validation split's loss, else nothing. It stays the validation's under ``test``: the
        checkpoint callback's saved state is found by its monitor."""
        return self.main_metric_for("validate")

    def main_metric_for(self, stage: str) -> str | None:
        """The metric that leads the scores of ``stage`` (validate or test): its first evaluation set's main
        metric, else its first pair split's loss, else nothing."""
        sets = self.evaluation_sets_for(stage)
        if sets:
            return f"{sets[0].name}/{sets[0].main_metric}"
        splits = self.test_split_names if stage == "test" else self.validation_split_names
        return f"{splits[0]}/loss" if splits else None

    def _set_loaders(self, stage: str) -> list[DataLoader]:
        collator = ModelInputCollator(
            self.tokenizer, self.pad_to_multiple_of, (INPUT_IDS, ATTENTION_MASK, EXAMPLE_INDEX)
        )
        # Tokenized once per set: Lightning's `LightningDataModule.__str__` builds every loader, and the CLI
        # prints datamodules while it builds them.
        cache = self.__dict__.setdefault("_tokenized_sets", {})
        loaders = []
        for evaluation_set in self.evaluation_sets_for(stage):
            key = id(evaluation_set)  # the sets are cached objects: their id is stable
            if key not in cache:
                cache[key] = tokenized_texts(evaluation_set.texts, self.tokenizer, self.max_length)
            loader = evaluation_loader(
                cache[key], self.eval_batch_size, collator, self.trainer, self.num_workers,
                longest_first=True, name=f"Evaluation set '{evaluation_set.name}'",
            )  # fmt: skip
            loaders.append(loader)
        return loaders

    def _with_split_loaders(self, stage: str, split_loaders: DataLoader | list[DataLoader]) -> list:
        """The evaluation sets' loaders followed by the pair splits' (the base class's loaders)."""
        if not isinstance(split_loaders, list):
            split_loaders = [split_loaders]
        loaders = [*self._set_loaders(stage), *split_loaders]
        return loaders[0] if len(loaders) == 1 else loaders

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per validation set (``eval_sets``), then per pair validation split."""
        return self._with_split_loaders("validate", super().val_dataloader())

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per test set (``test_sets``, else ``eval_sets``), then per pair test split."""
        return self._with_split_loaders("test", super().test_dataloader())
