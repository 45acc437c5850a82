"""GLUE and generic metrics agree with scikit-learn / scipy when fed over several batches."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

from neobert_tasks.metrics import (
    GLUE_MAIN_METRIC,
    classification_metrics,
    glue_metrics,
    predictions_from_logits,
)

# Uneven batch sizes so that the accumulation across update() calls is exercised, not just one call.
BATCH_SIZES = [1, 7, 32, 64, 13, 100, 47, 37]
NUM_EXAMPLES = sum(BATCH_SIZES)
TOL = 1e-6

CLASSIFICATION_TASKS = {"cola": 2, "sst2": 2, "mrpc": 2, "qqp": 2, "mnli": 3, "qnli": 2, "rte": 2, "wnli": 2}
EXPECTED_KEYS = {
    "cola": {"matthews_correlation"},
    "sst2": {"accuracy"},
    "mrpc": {"f1", "accuracy"},
    "qqp": {"f1", "accuracy"},
    "stsb": {"pearson", "spearman"},
    "mnli": {"accuracy"},
    "qnli": {"accuracy"},
    "rte": {"accuracy"},
    "wnli": {"accuracy"},
}


@pytest.fixture(autouse=True)
def _quiet_spearman_buffer_warning():
    """Silence torchmetrics' note that SpearmanCorrCoef keeps every example in memory."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all targets and predictions.*")
        yield


def _feed(metrics, preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Update ``metrics`` batch by batch and return the computed values as floats.

    Args:
        metrics: the MetricCollection under test.
        preds: predictions of the whole evaluation set.
        target: labels of the whole evaluation set.
    """
    for p, t in zip(preds.split(BATCH_SIZES), target.split(BATCH_SIZES), strict=True):
        metrics.update(p, t)
    return {key: value.item() for key, value in metrics.compute().items()}


def _feed_single(metrics, preds: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Update ``metrics`` with one batch and return the computed values as floats.

    Args:
        metrics: the MetricCollection under test.
        preds: predictions.
        target: labels.
    """
    metrics.update(preds, target)
    return {key: value.item() for key, value in metrics.compute().items()}


def _sklearn_reference(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Return GLUE's reference values computed with scikit-learn.

    Args:
        task: GLUE classification task name.
        y_true: gold class ids.
        y_pred: predicted class ids.
    """
    if task == "cola":
        return {"matthews_correlation": matthews_corrcoef(y_true, y_pred)}
    reference = {"accuracy": accuracy_score(y_true, y_pred)}
    if task in ("mrpc", "qqp"):
        reference["f1"] = f1_score(y_true, y_pred, pos_label=1, average="binary")
    return reference


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("task", sorted(CLASSIFICATION_TASKS))
def test_glue_classification_matches_sklearn(task: str, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    num_classes = CLASSIFICATION_TASKS[task]
    logits = torch.randn(NUM_EXAMPLES, num_classes, generator=generator)
    target = torch.randint(0, num_classes, (NUM_EXAMPLES,), generator=generator)
    # Bias the logits towards the labels so the scores are far from chance and informative.
    logits[torch.arange(NUM_EXAMPLES), target] += 0.7
    preds = predictions_from_logits(logits, "single_label_classification")

    values = _feed(glue_metrics(task), preds, target)

    reference = _sklearn_reference(task, target.numpy(), preds.numpy())
    assert set(values) == EXPECTED_KEYS[task]
    for key, expected in reference.items():
        assert values[key] == pytest.approx(expected, abs=TOL), key


@pytest.mark.parametrize("constant", [0, 1])
def test_cola_constant_predictions_score_zero_like_glue(constant: int) -> None:
    target = torch.tensor([1] * 7 + [0] * 3)
    preds = torch.full_like(target, constant)
    values = _feed_single(glue_metrics("cola"), preds, target)
    assert values["matthews_correlation"] == pytest.approx(matthews_corrcoef(target, preds), abs=TOL)
    assert values["matthews_correlation"] == 0.0


def test_cola_constant_labels_score_zero_like_glue() -> None:
    target = torch.ones(6, dtype=torch.long)
    preds = torch.tensor([1, 0, 1, 1, 0, 1])
    values = _feed_single(glue_metrics("cola"), preds, target)
    assert values["matthews_correlation"] == matthews_corrcoef(target, preds) == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stsb_matches_scipy_with_ties(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    # STS-B gold scores are on a 0-5 scale with many repeated values; predictions rounded to 0.25 tie too.
    target = torch.randint(0, 26, (NUM_EXAMPLES,), generator=generator).float() / 5
    noise = torch.randn(NUM_EXAMPLES, generator=generator)
    logits = (target + noise).mul(4).round().div(4).unsqueeze(-1)
    preds = predictions_from_logits(logits, "regression")
    assert preds.shape == (NUM_EXAMPLES,)
    assert len(torch.unique(preds)) < NUM_EXAMPLES / 4  # ties really are present

    values = _feed(glue_metrics("stsb"), preds, target)

    y_true, y_pred = target.double().numpy(), preds.double().numpy()
    assert set(values) == EXPECTED_KEYS["stsb"]
    assert values["pearson"] == pytest.approx(pearsonr(y_pred, y_true)[0], abs=TOL)
    assert values["spearman"] == pytest.approx(spearmanr(y_pred, y_true)[0], abs=TOL)


@pytest.mark.parametrize("task", sorted(EXPECTED_KEYS))
def test_main_metric_is_one_of_the_task_metrics(task: str) -> None:
    assert GLUE_MAIN_METRIC[task] in glue_metrics(task)


def test_main_metric_values() -> None:
    assert GLUE_MAIN_METRIC["cola"] == "matthews_correlation"
    assert GLUE_MAIN_METRIC["stsb"] == "pearson"
    assert GLUE_MAIN_METRIC["mrpc"] == GLUE_MAIN_METRIC["qqp"] == "f1"
    for task in ("sst2", "mnli", "qnli", "rte", "wnli"):
        assert GLUE_MAIN_METRIC[task] == "accuracy"


@pytest.mark.parametrize("alias", ["mnli_matched", "mnli_mismatched"])
def test_mnli_validation_set_names_are_mnli(alias: str) -> None:
    assert set(glue_metrics(alias)) == {"accuracy"}


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="Unknown GLUE task 'squad'") as excinfo:
        glue_metrics("squad")
    for task in EXPECTED_KEYS:
        assert task in str(excinfo.value)


def test_predictions_single_label_is_argmax() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5]])
    for problem_type in ("single_label", "single_label_classification"):
        assert predictions_from_logits(logits, problem_type).tolist() == [1, 0]


def test_predictions_multi_label_thresholds_sigmoid_at_half() -> None:
    logits = torch.tensor([[2.0, -0.5, 0.0], [-3.0, 0.1, 5.0]])
    preds = predictions_from_logits(logits, "multi_label_classification")
    # A logit of exactly 0 is a probability of exactly 0.5, which is not above the threshold.
    assert preds.tolist() == [[1, 0, 0], [0, 1, 1]]
    assert preds.dtype == torch.long
    assert torch.equal(predictions_from_logits(logits, "multi_label"), preds)


def test_predictions_regression_squeezes_and_upcasts() -> None:
    logits = torch.tensor([[0.5], [1.5], [2.5]], dtype=torch.bfloat16)
    preds = predictions_from_logits(logits, "regression")
    assert preds.shape == (3,)
    assert preds.dtype == torch.float32
    assert predictions_from_logits(torch.tensor([[4.0]]), "regression").shape == (1,)
    assert predictions_from_logits(torch.tensor([4.0]), "regression").shape == (1,)
    assert predictions_from_logits(torch.zeros(3, 2), "regression").shape == (3, 2)


def test_predictions_unknown_problem_type() -> None:
    with pytest.raises(ValueError, match="Unknown problem_type 'ranking'"):
        predictions_from_logits(torch.zeros(2, 2), "ranking")


@pytest.mark.parametrize("num_labels", [2, 5])
def test_classification_metrics_single_label(num_labels: int) -> None:
    generator = torch.Generator().manual_seed(num_labels)
    logits = torch.randn(NUM_EXAMPLES, num_labels, generator=generator)
    target = torch.randint(0, num_labels, (NUM_EXAMPLES,), generator=generator)
    logits[torch.arange(NUM_EXAMPLES), target] += 0.5
    preds = predictions_from_logits(logits, "single_label")

    values = _feed(classification_metrics("single_label_classification", num_labels), preds, target)

    y_true, y_pred = target.numpy(), preds.numpy()
    expected = {
        "accuracy": accuracy_score(y_true, y_pred),
        "f1_macro": f1_score(y_true, y_pred, average="macro"),
    }
    if num_labels == 2:
        expected["f1"] = f1_score(y_true, y_pred, average="binary")
    assert set(values) == set(expected)
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, abs=TOL), key


def test_classification_metrics_multi_label() -> None:
    generator = torch.Generator().manual_seed(0)
    num_labels = 4
    target = torch.randint(0, 2, (NUM_EXAMPLES, num_labels), generator=generator)
    logits = torch.randn(NUM_EXAMPLES, num_labels, generator=generator) + (target * 2 - 1) * 1.5
    preds = predictions_from_logits(logits, "multi_label")

    # Multi-label targets arrive as floats (they feed BCEWithLogitsLoss).
    values = _feed(classification_metrics("multi_label", num_labels), preds, target.float())

    y_true, y_pred = target.numpy(), preds.numpy()
    assert set(values) == {"f1_micro", "subset_accuracy"}
    assert values["f1_micro"] == pytest.approx(f1_score(y_true, y_pred, average="micro"), abs=TOL)
    assert values["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=TOL)
    assert 0.0 < values["subset_accuracy"] < 1.0


def test_classification_metrics_regression() -> None:
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(NUM_EXAMPLES, generator=generator)
    preds = predictions_from_logits(
        (target + torch.randn(NUM_EXAMPLES, generator=generator)).unsqueeze(-1), "regression"
    )

    values = _feed(classification_metrics("regression", 1), preds, target)

    y_true, y_pred = target.double().numpy(), preds.double().numpy()
    assert set(values) == {"pearson", "spearman", "mse"}
    assert values["pearson"] == pytest.approx(pearsonr(y_pred, y_true)[0], abs=TOL)
    assert values["spearman"] == pytest.approx(spearmanr(y_pred, y_true)[0], abs=TOL)
    assert values["mse"] == pytest.approx(mean_squared_error(y_true, y_pred), rel=1e-6)


@pytest.mark.parametrize(
    ("problem_type", "num_labels"),
    [("single_label", 1), ("multi_label", 0), ("regression", 0), ("tagging", 3)],
)
def test_classification_metrics_rejects_bad_arguments(problem_type: str, num_labels: int) -> None:
    with pytest.raises(ValueError):
        classification_metrics(problem_type, num_labels)


def _ddp_worker(rank: int, world_size: int, init_file: str, results: dict) -> None:
    """Feed each rank a different, unevenly sized share of the data and store the synced values.

    Args:
        rank: process index given by ``torch.multiprocessing.spawn``.
        world_size: number of processes.
        init_file: file used to rendezvous the process group.
        results: shared dict receiving ``{task: values}`` from rank 0.
    """
    import torch.distributed as dist

    # A forked child must not use the parent's OpenMP pool (it would wait forever on its barrier).
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        data = _ddp_data()
        out = {}
        for task, (preds, target) in data.items():
            metrics = glue_metrics(task)
            # Rank 0 gets the first 100 examples, rank 1 the remaining ones: unequal shares.
            share = slice(0, 100) if rank == 0 else slice(100, None)
            for p, t in zip(preds[share].split(16), target[share].split(16), strict=True):
                metrics.update(p, t)
            out[task] = {key: value.item() for key, value in metrics.compute().items()}
        if rank == 0:
            results.update(out)
    finally:
        dist.destroy_process_group()


def _ddp_data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Return the same deterministic predictions and labels in every process."""
    generator = torch.Generator().manual_seed(123)
    n = 251
    binary = torch.randint(0, 2, (n,), generator=generator), torch.randint(0, 2, (n,), generator=generator)
    three = torch.randint(0, 3, (n,), generator=generator), torch.randint(0, 3, (n,), generator=generator)
    target = torch.randint(0, 26, (n,), generator=generator).float() / 5
    scores = (target + torch.randn(n, generator=generator)).mul(2).round().div(2)
    return {"cola": binary, "mrpc": binary, "mnli": three, "stsb": (scores, target)}


def test_metrics_sync_across_ddp_ranks(tmp_path) -> None:
    import torch.multiprocessing as mp

    manager = mp.Manager()
    results = manager.dict()
    # fork, not spawn: the children inherit the imported modules instead of importing torch again.
    args = (2, str(tmp_path / "rendezvous"), results)
    mp.start_processes(_ddp_worker, args=args, nprocs=2, join=True, start_method="fork")

    data = _ddp_data()
    for task in ("cola", "mrpc", "mnli"):
        preds, target = data[task]
        expected = _sklearn_reference(task, target.numpy(), preds.numpy())
        for key, value in expected.items():
            assert results[task][key] == pytest.approx(value, abs=TOL), (task, key)
    preds, target = (x.double().numpy() for x in data["stsb"])
    assert results["stsb"]["pearson"] == pytest.approx(pearsonr(preds, target)[0], abs=TOL)
    assert results["stsb"]["spearman"] == pytest.approx(spearmanr(preds, target)[0], abs=TOL)


def test_float64_metrics_equal_the_reference_scorers_to_rounding():
    """In float64 (what the tasks use off MPS), STS-B's Spearman (tied ranks) and Pearson, CoLA's Matthews and
    MRPC's F1 are SciPy's and scikit-learn's values to 1e-12, not float32's 1e-7."""
    generator = torch.Generator().manual_seed(5)
    target = (torch.randint(0, 26, (1500,), generator=generator) / 5).double()
    scores = (target + torch.randn(1500, generator=generator, dtype=torch.float64)).mul(2).round().div(2)
    stsb = glue_metrics("stsb")
    stsb.set_dtype(torch.float64)
    for start in range(0, 1500, 32):
        stsb.update(scores[start : start + 32], target[start : start + 32])
    values = {name: value.item() for name, value in stsb.compute().items()}
    assert values["spearman"] == pytest.approx(spearmanr(scores, target)[0], abs=1e-12)
    assert values["pearson"] == pytest.approx(pearsonr(scores, target)[0], abs=1e-12)
    labels, predictions = (torch.randint(0, 2, (999,), generator=generator) for _ in range(2))
    references = {"cola": ("matthews_correlation", matthews_corrcoef), "mrpc": ("f1", f1_score)}
    for task, (name, reference) in references.items():
        metrics = glue_metrics(task)
        metrics.set_dtype(torch.float64)
        metrics.update(predictions, labels)
        value = metrics.compute()[name]
        assert value.dtype == torch.float64
        assert value.item() == pytest.approx(reference(labels, predictions), abs=1e-12)
