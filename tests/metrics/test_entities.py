"""EntityF1 and extract_entities give seqeval's numbers, however the words are split, ordered or spread."""

from __future__ import annotations

import datetime
import json
import random
import socket
import time
import warnings

import pyarrow.parquet as pq
import pytest
import torch
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from seqeval.metrics.sequence_labeling import get_entities
from seqeval.scheme import IOB2, Tokens

from neobert_tasks.metrics import EntityF1, extract_entities
from tests.conftest import shared_path

TOLERANCE = 1e-9
MODES = ("conlleval", "strict")
CONLL_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
IOBES_LABELS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]

# (gold, predicted) corpora whose reading differs between the lenient and the strict rules, or that hit
# seqeval's divisions by zero.
HAND_MADE_CASES = {
    "i_after_o": ([["O", "B-PER", "I-PER", "O"]], [["O", "I-PER", "I-PER", "O"]]),
    "i_x_after_b_y": ([["B-PER", "I-PER", "O"]], [["B-ORG", "I-PER", "O"]]),
    "b_after_b_same_type": ([["B-LOC", "B-LOC", "I-LOC"]], [["B-LOC", "I-LOC", "I-LOC"]]),
    "entity_at_sequence_end": (
        [["O", "O", "B-MISC"], ["O", "B-ORG", "I-ORG"]],
        [["O", "O", "B-MISC"], ["O", "O", "B-ORG"]],
    ),
    "all_o": ([["O", "O"], ["O"]], [["O", "O"], ["O"]]),
    "empty_predictions": ([["B-PER", "I-PER", "O"], ["B-LOC"]], [["O", "O", "O"], ["O"]]),
    "no_gold_entities": ([["O", "O", "O"]], [["B-PER", "O", "I-LOC"]]),
    "no_entity_across_sentences": ([["O", "B-PER"], ["I-PER", "O"]], [["O", "B-PER"], ["B-PER", "O"]]),
    "lone_i_tags": ([["I-PER", "I-LOC", "I-LOC"]], [["I-PER", "I-PER", "I-LOC"]]),
}


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Run this module's torch ops on one thread.

    Besides sparing the shared CPUs, this keeps these tests from starting torch's OpenMP thread pool in
    the pytest process: a pool started there hangs the children of any later test that forks workers
    without first dropping to one thread.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _random_corpus(
    labels: list[str], sequence_count: int, seed: int, max_length: int = 15
) -> list[list[str]]:
    """Uniformly random tags: most sequences are malformed (I- after O, types switching mid-entity)."""
    generator = random.Random(seed)
    return [
        [generator.choice(labels) for _ in range(generator.randint(1, max_length))]
        for _ in range(sequence_count)
    ]


def _random_predictions(gold: list[list[str]], labels: list[str], seed: int) -> list[list[str]]:
    """Uniformly random tags, one per gold tag."""
    generator = random.Random(seed)
    return [[generator.choice(labels) for _ in tags] for tags in gold]


def _seqeval_scores(gold: list[list[str]], predicted: list[list[str]], mode: str) -> dict[str, float]:
    """seqeval's micro scores, per-type report and accuracy, under the names EntityF1 uses."""
    options = {"mode": "strict", "scheme": IOB2} if mode == "strict" else {}
    # seqeval warns (and returns 0) on every 0/0; those values are what is checked.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = {
            "precision": precision_score(gold, predicted, **options),
            "recall": recall_score(gold, predicted, **options),
            "f1": f1_score(gold, predicted, **options),
            "accuracy": accuracy_score(gold, predicted),
        }
        report = classification_report(gold, predicted, output_dict=True, **options)
    for name, row in report.items():
        if name == "micro avg":
            assert (row["precision"], row["recall"], row["f1-score"]) == pytest.approx(
                (scores["precision"], scores["recall"], scores["f1"]), abs=TOLERANCE
            )
        elif not name.endswith(" avg"):
            scores.update(
                {
                    f"precision_{name}": row["precision"],
                    f"recall_{name}": row["recall"],
                    f"f1_{name}": row["f1-score"],
                }
            )
    return {key: float(value) for key, value in scores.items()}


def _metric_scores(gold: list[list[str]], predicted: list[list[str]], mode: str, labels=CONLL_LABELS) -> dict:
    """EntityF1's values as floats, fed one sequence per example."""
    metric = EntityF1(labels, mode=mode)
    metric.update_sequences(predicted, gold)
    return {key: value.item() for key, value in metric.compute().items()}


def _assert_matches_seqeval(
    gold: list[list[str]], predicted: list[list[str]], mode: str, labels=CONLL_LABELS
):
    """Every seqeval number equals EntityF1's; a type seqeval does not report (never seen) scores 0."""
    expected = _seqeval_scores(gold, predicted, mode)
    actual = _metric_scores(gold, predicted, mode, labels)
    for key, value in actual.items():
        assert value == pytest.approx(expected.get(key, 0.0), abs=TOLERANCE), key
    assert set(expected) <= set(actual)


def _rows(gold: list[list[str]], predicted: list[list[str]], labels=CONLL_LABELS) -> torch.Tensor:
    """One (example id, word id, predicted id, gold id) row per word; example ids are sparse on purpose."""
    index = {name: position for position, name in enumerate(labels)}
    rows = [
        (1000 * example + 7, word, index[predicted_tag], index[gold_tag])
        for example, (gold_tags, predicted_tags) in enumerate(zip(gold, predicted, strict=True))
        for word, (gold_tag, predicted_tag) in enumerate(zip(gold_tags, predicted_tags, strict=True))
    ]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 4)


def _feed_rows(metric: EntityF1, rows: torch.Tensor, cut_points: list[int]) -> None:
    """Update ``metric`` with consecutive slices of ``rows`` split at ``cut_points``."""
    for chunk in torch.tensor_split(rows, cut_points):
        metric.update(*chunk.unbind(dim=1))


# --- extract_entities ------------------------------------------------------------------------------------


def test_extract_entities_examples():
    """The lenient reading keeps malformed entities, the strict one drops them; ``end`` is exclusive."""
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-ORG", "I-MISC", "B-PER"]
    assert extract_entities(tags) == {
        ("PER", 0, 2),
        ("LOC", 3, 5),
        ("ORG", 5, 6),
        ("MISC", 6, 7),
        ("PER", 7, 8),
    }
    assert extract_entities(tags, "strict") == {("PER", 0, 2), ("ORG", 5, 6), ("PER", 7, 8)}
    assert extract_entities(["S-LOC", "B-PER", "E-PER", "I-PER"]) == {
        ("LOC", 0, 1),
        ("PER", 1, 3),
        ("PER", 3, 4),
    }
    assert extract_entities([], "strict") == extract_entities([]) == set()


def test_extract_entities_equals_get_entities_on_odd_tags():
    """Lenient mode is seqeval's get_entities on one sequence, odd prefixes and ``-`` placements included."""
    alphabet = IOBES_LABELS + ["B", "I", "E", "S", "B-", "O-PER", ".", ".PER", "X", "PER", "B-PER-", "B--PER"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # seqeval warns that "X" and the like are not NE tags
        for tags in _random_corpus(alphabet, 3000, seed=1, max_length=10):
            expected = {(entity_type, start, end + 1) for entity_type, start, end in get_entities(tags)}
            assert extract_entities(tags) == expected, tags


def test_strict_extract_entities_equals_seqeval_iob2():
    """Strict mode is seqeval's IOB2 scheme on one sequence, and refuses the prefixes seqeval refuses."""
    alphabet = CONLL_LABELS + ["B", "I", "B-", "O-PER", "B-PER-", "I--PER", "BPER", "IPER"]
    for tags in _random_corpus(alphabet, 3000, seed=2, max_length=10):
        expected = {(entity.tag, entity.start, entity.end) for entity in Tokens(tags, IOB2).entities}
        assert extract_entities(tags, "strict") == expected, tags
    for tags in (["O", "E-PER"], ["S-PER"], ["X"], [""]):
        with pytest.raises(ValueError):
            extract_entities(tags, "strict")
    with pytest.raises(ValueError, match="Unknown mode"):
        extract_entities(["O"], "iob1")


# --- EntityF1 against seqeval -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", sorted(HAND_MADE_CASES))
def test_hand_made_cases(case, mode):
    gold, predicted = HAND_MADE_CASES[case]
    _assert_matches_seqeval(gold, predicted, mode)


@pytest.mark.parametrize("mode", MODES)
def test_random_corpus(mode):
    """Thousands of random (mostly malformed) sequences, per-type scores included."""
    gold = _random_corpus(CONLL_LABELS, 2000, seed=3)
    predicted = _random_predictions(gold, CONLL_LABELS, seed=4)
    _assert_matches_seqeval(gold, predicted, mode)


@pytest.mark.parametrize("mode", MODES)
def test_many_small_random_corpora(mode):
    """Corpora of 1-3 short sequences, where some types (or all entities) are absent and 0/0 is common."""
    generator = random.Random(5)
    for _ in range(150):
        gold = _random_corpus(CONLL_LABELS, generator.randint(1, 3), seed=generator.random(), max_length=4)
        predicted = [[generator.choice(["O", generator.choice(CONLL_LABELS)]) for _ in tags] for tags in gold]
        _assert_matches_seqeval(gold, predicted, mode)


def test_iobes_corpus():
    """IOBES tags (E-, S-) in the default mode, which seqeval reads too."""
    gold = _random_corpus(IOBES_LABELS, 1000, seed=6)
    predicted = _random_predictions(gold, IOBES_LABELS, seed=12)
    _assert_matches_seqeval(gold, predicted, "conlleval", labels=IOBES_LABELS)


@pytest.fixture(scope="module")
def conll_validation() -> tuple[list[list[str]], list[list[str]], list[str]]:
    """CoNLL-2003 validation gold tags, a copy with ~10% of tags flipped at random, and the label names."""
    path = shared_path("data", "conll2003", "validation.parquet")
    table = pq.read_table(path, columns=["ner_tags"])
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    labels = features["ner_tags"]["feature"]["names"]
    gold = [[labels[index] for index in tags] for tags in table.column("ner_tags").to_pylist()]
    generator = random.Random(7)
    predicted = [
        [generator.choice(labels) if generator.random() < 0.1 else tag for tag in tags] for tags in gold
    ]
    return gold, predicted, labels


@pytest.mark.parametrize("mode", MODES)
def test_conll2003_validation(conll_validation, mode):
    gold, predicted, labels = conll_validation
    assert labels == CONLL_LABELS
    _assert_matches_seqeval(gold, predicted, mode, labels)


# --- input handling ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_order_and_splitting_do_not_matter(mode):
    """Shuffled words, examples split across updates and repeated words give the one-pass values."""
    gold = _random_corpus(CONLL_LABELS, 300, seed=8)
    predicted = _random_predictions(gold, CONLL_LABELS, seed=9)
    expected = _metric_scores(gold, predicted, mode)

    rows = _rows(gold, predicted)
    generator = torch.Generator().manual_seed(10)
    shuffled = rows[torch.randperm(len(rows), generator=generator)]
    # Repeats of already-seen words (as from overlapping windows) with other predictions: the first wins.
    repeats = shuffled[:200].clone()
    repeats[:, 2] = (repeats[:, 2] + 1) % len(CONLL_LABELS)
    metric = EntityF1(CONLL_LABELS, mode=mode)
    _feed_rows(metric, torch.cat([shuffled, repeats]), cut_points=[1, 500, 501, 1700, len(rows) + 50])
    metric.update(*(torch.zeros(0, dtype=torch.long) for _ in range(4)))
    actual = {key: value.item() for key, value in metric.compute().items()}
    assert actual == pytest.approx(expected, abs=1e-12)


def test_keys_and_empty_metric():
    """Keys per type of label_names; no words at all (or only empty updates) scores 0 everywhere."""
    metric = EntityF1(CONLL_LABELS)
    expected_keys = {"precision", "recall", "f1", "accuracy"} | {
        f"{name}_{entity_type}"
        for name in ("precision", "recall", "f1")
        for entity_type in ("PER", "ORG", "LOC", "MISC")
    }
    with pytest.warns(UserWarning, match="before the ``update`` method"):
        values = metric.compute()
    assert set(values) == expected_keys
    assert all(value.item() == 0.0 and value.dtype == torch.float64 for value in values.values())
    metric.update(*(torch.zeros(0, dtype=torch.int32) for _ in range(4)))
    assert all(value.item() == 0.0 for value in metric.compute().values())


def test_invalid_inputs():
    with pytest.raises(ValueError, match="does not start with"):
        EntityF1(["O", "B-PER", "E-PER"], mode="strict")
    with pytest.raises(ValueError, match="does not start with"):
        EntityF1(["O", ".PER"])
    with pytest.raises(ValueError, match="duplicates"):
        EntityF1(["O", "B-PER", "B-PER"])
    metric = EntityF1(CONLL_LABELS)
    with pytest.raises(ValueError, match="equal length"):
        metric.update(
            torch.zeros(3, dtype=torch.long),
            torch.arange(3),
            torch.zeros(2, dtype=torch.long),
            torch.zeros(3),
        )
    with pytest.raises(ValueError, match="not one of label_names"):
        metric.update_sequences([["B-XYZ"]], [["O"]])
    metric.update(
        *(torch.tensor([0]), torch.tensor([0]), torch.tensor([len(CONLL_LABELS)]), torch.tensor([0]))
    )
    with pytest.raises(ValueError, match="Tag ids must lie"):
        metric.compute()


# --- two processes ----------------------------------------------------------------------------------------


def _ddp_worker(rank: int, port: int, scenarios: list[list[list[torch.Tensor]]], output: str) -> None:
    """Feed this rank's rows of every scenario into a fresh EntityF1 and save what compute() returns."""
    torch.set_num_threads(1)  # first: see test_two_process_gloo
    # A short timeout: if one rank dies, the other fails soon instead of waiting half an hour.
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    # The rank of the no-update scenario is told that compute() came before update(); that is the point.
    warnings.filterwarnings("ignore", message=".*called before the ``update`` method.*")
    try:
        results = []
        for scenario in scenarios:
            metric = EntityF1(CONLL_LABELS)
            for rows in scenario[rank]:
                metric.update(*rows.unbind(dim=1))
            results.append({key: value.item() for key, value in metric.compute().items()})
        torch.save(results, f"{output}/rank{rank}.pt")
    finally:
        torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_process_gloo(tmp_path):
    """Under a real 2-process gloo group every rank computes the single-process value."""
    gold = _random_corpus(CONLL_LABELS, 40, seed=11)
    predicted = _random_predictions(gold, CONLL_LABELS, seed=13)
    rows = _rows(gold, predicted)
    long_gold = [[tag for tags in gold for tag in tags]]
    long_predicted = [[tag for tags in predicted for tag in tags]]
    long_rows = _rows(long_gold, long_predicted)
    half, overlap = len(long_rows) // 2, 15
    scenarios = [
        # Different examples on each rank, the second rank's in reverse order and in two updates.
        [[rows[rows[:, 0] < 20_000]], list(rows[rows[:, 0] >= 20_000].flip(0).tensor_split(2))],
        # Two overlapping windows of one document, one per rank (the overlap counts once).
        [[long_rows[half - overlap :]], [long_rows[: half + overlap]]],
        # A rank that sees no update at all, and one whose only update is empty.
        [[rows], []],
        [[rows[:0]], [rows]],
    ]
    port = _free_port()
    # fork, not spawn: a spawned child would spend seconds importing torch, transformers and torchmetrics
    # again. The worker drops to one thread before any torch op, as DataLoader workers do, so it never
    # enters the OpenMP pool inherited from the parent (which does not survive a fork).
    context = torch.multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_ddp_worker, args=(rank, port, scenarios, str(tmp_path))) for rank in range(2)
    ]
    for process in processes:
        process.start()
    deadline = time.monotonic() + 180
    for process in processes:
        process.join(timeout=max(1.0, deadline - time.monotonic()))
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
    assert not hung and all(process.exitcode == 0 for process in processes)

    expected = [_metric_scores(gold, predicted, "conlleval")] * 4
    expected[1] = _metric_scores(long_gold, long_predicted, "conlleval")
    for rank in range(2):
        results = torch.load(tmp_path / f"rank{rank}.pt")
        for scenario, (actual, wanted) in enumerate(zip(results, expected, strict=True)):
            assert actual == pytest.approx(wanted, abs=TOLERANCE), (rank, scenario)
