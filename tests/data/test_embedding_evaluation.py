"""Evaluation sets of `PairDataModule` (STS files, BEIR folders, SQuAD files), their loaders beside the pair
splits', and the texts ``predict`` embeds."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from neobert_tasks.data import DataError, MissingDataError, PairDataModule
from neobert_tasks.data.embedding_evaluation import load_evaluation_set, load_evaluation_sets
from neobert_tasks.data.keys import EXAMPLE_INDEX, INPUT_IDS
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.metrics.embedding_sets import RetrievalSet, SimilaritySet
from tests.conftest import shared_path


@pytest.fixture
def sts_file(write_split, sentences):
    """An STS file of 12 pairs, named after no split (its set is called ``pairs``)."""
    return write_split(
        "pairs", sentence1=sentences(12), sentence2=sentences(12, offset=3), score=[i % 5 for i in range(12)]
    )


@pytest.fixture
def beir_dir(tmp_path, sentences):
    """A BEIR folder: 6 documents, 4 queries with test qrels (one document each) and 2 without."""
    folder = tmp_path / "tiny_beir"
    (folder / "qrels").mkdir(parents=True)
    documents, queries = sentences(6), sentences(6, offset=9)
    pd.DataFrame({"_id": [f"d{i}" for i in range(6)], "title": "", "text": documents}).to_parquet(
        folder / "corpus.parquet"
    )
    pd.DataFrame({"_id": [f"q{i}" for i in range(6)], "text": queries}).to_parquet(folder / "queries.parquet")
    qrels = {"query-id": [f"q{i}" for i in range(4)], "corpus-id": ["d1", "d3", "d0", "d5"], "score": 1}
    pd.DataFrame(qrels).to_csv(folder / "qrels" / "test.tsv", sep="\t", index=False)
    return folder


def test_a_path_gives_the_set_its_content_says(sts_file, beir_dir):
    similarity = load_evaluation_set(str(sts_file), limit=5)
    assert isinstance(similarity, SimilaritySet) and similarity.name == "pairs"
    assert len(similarity.scores) == 5
    retrieval = load_evaluation_set(str(beir_dir), query_prefix="q: ", document_prefix="d: ", limit=2)
    assert isinstance(retrieval, RetrievalSet) and retrieval.name == "tiny_beir"
    # The limit keeps the first queries and the whole corpus: fewer documents would make retrieval easier.
    assert len(retrieval.query_ids) == 2 and len(retrieval.corpus) == 6
    assert all(text.startswith(("q: ", "d: ")) for text in retrieval.texts)


def test_a_squad_file_is_question_to_paragraph_retrieval():
    path = shared_path("data", "squad", "validation.parquet")
    squad = load_evaluation_set(str(path), limit=50)
    assert isinstance(squad, RetrievalSet) and squad.name == "squad_dev"
    assert len(squad.query_ids) == 50 and len(squad.corpus) == 2067  # SQuAD dev's distinct paragraphs


def test_missing_and_clashing_sets_are_refused(sts_file, tmp_path):
    with pytest.raises(MissingDataError, match=r"'nowhere.parquet' \(data.init_args.eval_sets\) does not"):
        load_evaluation_set("nowhere.parquet")
    with pytest.raises(DataError, match=r"give the same name twice \(pairs\)"):
        load_evaluation_sets([str(sts_file), str(sts_file)])


def pair_data(write_split, sentences, **options) -> PairDataModule:
    """A datamodule over 40 training pairs and 12 validation pairs of the tiny vocabulary."""
    path = write_split("train", anchor=sentences(40), positive=sentences(40, offset=5))
    write_split("validation", anchor=sentences(12, offset=2), positive=sentences(12, offset=8))
    return PairDataModule(data_dir=str(path.parent), batch_size=8, eval_batch_size=5, **options)


def test_a_missing_set_is_named_with_its_option_and_test_sets_are_checked_at_fit(
    write_split, sentences, sts_file, tiny_tokenizer_dir, datasets_cache
):
    """A missing test set surfaced only at `test`, after the fit; neither message named the option."""
    datamodule = pair_data(
        write_split, sentences, tokenizer=tiny_tokenizer_dir, cache_dir=datasets_cache,
        eval_sets=[str(sts_file)], test_sets=["gone/test.parquet"],
    )  # fmt: skip
    with pytest.warns(
        UserWarning, match=r"'gone/test.parquet' \(data.init_args.test_sets\) does not exist: this"
    ):
        datamodule.evaluation_sets_for("fit")
    with pytest.raises(MissingDataError, match=r"'gone.parquet' \(data.init_args.eval_sets\) does not exist"):
        load_evaluation_set("gone.parquet")


def test_validation_runs_the_sets_then_the_pair_split(
    write_split, sentences, sts_file, beir_dir, tiny_tokenizer_dir, datasets_cache
):
    datamodule = pair_data(
        write_split, sentences, tokenizer=tiny_tokenizer_dir, cache_dir=datasets_cache,
        eval_sets=[str(beir_dir), str(sts_file)],
    )  # fmt: skip
    datamodule.setup("fit")
    assert datamodule.split_names_for("validate") == ["tiny_beir", "pairs", "validation"]
    assert datamodule.main_metric == "tiny_beir/ndcg@10"  # what `monitor: auto` watches
    loaders = datamodule.val_dataloader()
    assert len(loaders) == 3 and "anchor_input_ids" in next(iter(loaders[2]))
    for loader, evaluation_set in zip(loaders, datamodule.evaluation_sets_for("validate"), strict=False):
        batches = list(loader)
        seen = torch.cat([batch[EXAMPLE_INDEX] for batch in batches]).sort().values
        assert seen.tolist() == list(range(len(evaluation_set.texts)))  # every text once, indexed
        lengths = [int(batch["attention_mask"].sum(1).max()) for batch in batches]
        assert lengths == sorted(lengths, reverse=True)  # longest first: the first batch shows memory use
    assert datamodule.split_names_for("test") == ["tiny_beir", "pairs"]  # no test_sets: the eval sets


def test_a_misspelt_validation_split_is_named_when_sets_still_validate(
    write_split, sentences, sts_file, tiny_tokenizer_dir, datasets_cache
):
    """With evaluation sets to validate on, a validation_split without files went unnoticed."""
    datamodule = pair_data(
        write_split, sentences, tokenizer=tiny_tokenizer_dir, cache_dir=datasets_cache,
        eval_sets=[str(sts_file)], validation_split="valid",
    )  # fmt: skip
    with pytest.warns(
        UserWarning, match=r"No validation split 'valid' in directory .*; validation runs on pairs only"
    ):
        datamodule.setup("fit")


def test_sets_alone_validate_and_test_without_a_pair_split(
    write_split, sentences, sts_file, beir_dir, tiny_tokenizer_dir, datasets_cache
):
    path = write_split("train", anchor=sentences(16), positive=sentences(16, offset=5))
    datamodule = PairDataModule(
        tokenizer=tiny_tokenizer_dir, data_dir=str(path.parent), cache_dir=datasets_cache,
        eval_sets=[str(sts_file)], test_sets=[str(beir_dir)],
    )  # fmt: skip
    for stage in ("validate", "test"):
        datamodule.setup(stage)
    assert datamodule.split_names_for("validate") == ["pairs"]
    assert datamodule.split_names_for("test") == ["tiny_beir"]
    assert len(list(datamodule.test_dataloader())) == 1
    without_sets = PairDataModule(tokenizer=tiny_tokenizer_dir, data_dir=str(path.parent))
    with pytest.raises(MissingDataError, match=r"no files for splits \['validation'\]"):
        without_sets.setup("validate")
    assert without_sets.main_metric is None


def test_predict_embeds_a_file_with_its_prefix(tmp_path, write_split, sentences, tiny_tokenizer_dir):
    texts = sentences(5)
    file = tmp_path / "texts.jsonl"
    pd.DataFrame({"id": range(6), "body": [texts[0], " ", *texts[1:]]}).to_json(
        file, orient="records", lines=True
    )
    options = dict(tokenizer=tiny_tokenizer_dir, predict_file=str(file), predict_column="body")
    plain = pair_data(write_split, sentences, **options)
    with pytest.raises(DataError, match="predict_file; set it"):
        pair_data(write_split, sentences, tokenizer=tiny_tokenizer_dir).setup("predict")
    with pytest.warns(UserWarning, match="empty or null text"):
        plain.setup("predict")
    # The empty row is skipped; the others keep their row of the file, which the prediction files use.
    assert plain.predict_texts(PREDICT_SPLIT) == {0: texts[0], **{row + 1: texts[row] for row in range(1, 5)}}
    batch = next(iter(plain.predict_dataloader()))
    assert sorted(batch[EXAMPLE_INDEX].tolist()) == [0, 2, 3, 4, 5]
    prefixed = pair_data(write_split, sentences, query_prefix="query : ", predict_prefix="query", **options)
    with pytest.warns(UserWarning, match="empty or null text"):
        prefixed.setup("predict")
    plain_ids, prefixed_ids = (m.datasets[PREDICT_SPLIT][0][INPUT_IDS] for m in (plain, prefixed))
    tokenizer = plain.tokenizer
    assert prefixed_ids == tokenizer("query : " + texts[0])[INPUT_IDS] != plain_ids


def test_pairs_load_through_the_hub_route(write_split, sentences, tiny_tokenizer_dir, datasets_cache):
    """``dataset`` goes through `datasets.load_dataset`, which reads a dataset folder as it does a hub id
    (offline here): the same rows as ``data_dir``."""
    path = write_split("train", anchor=sentences(20), positive=sentences(20, offset=5))
    by_id = PairDataModule(
        tokenizer=tiny_tokenizer_dir, dataset=str(path.parent), cache_dir=datasets_cache, batch_size=4
    )
    with pytest.warns(UserWarning, match="without validation"):
        by_id.setup("fit")
    assert by_id.data_source.startswith("hub dataset")
    assert sum(len(batch["anchor_input_ids"]) for batch in by_id.train_dataloader()) == 20


def test_sets_cut_by_limit_eval_samples_are_recorded_for_the_partial_evaluation_warning(
    write_split, sentences, sts_file, beir_dir, tiny_tokenizer_dir, datasets_cache
):
    datamodule = pair_data(
        write_split, sentences, tokenizer=tiny_tokenizer_dir, cache_dir=datasets_cache,
        eval_sets=[str(beir_dir), str(sts_file)], limit_eval_samples=3,
    )  # fmt: skip
    datamodule.evaluation_sets_for("validate")
    # 3 of BEIR's 4 judged queries, 3 of the 12 STS pairs; the pair split is cut when it is loaded.
    assert datamodule.evaluation_cuts == {"tiny_beir": (3, 4), "pairs": (3, 12)}
