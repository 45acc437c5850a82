"""The warning of a validate, test or predict command that a batch limit leaves examples out."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from neobert_tasks.partial_evaluation import batch_counts, warn_if_partial


def trainer(stage: str, counts: list, sizes: list[int], limit, world_size: int = 1) -> SimpleNamespace:
    names = {"validate": "val", "test": "test", "predict": "predict"}
    short = names[stage]
    return SimpleNamespace(
        **{f"num_{short}_batches": counts, f"{short}_dataloaders": [range(size) for size in sizes]},
        **{f"limit_{short}_batches": limit},
        world_size=world_size,
    )


def test_a_cut_validation_says_how_much_it_scored_and_how_to_score_all():
    with pytest.warns(UserWarning) as caught:
        warn_if_partial(trainer("validate", [4, 4], [9, 5], 4), "validate")
    assert str(caught[0].message) == (
        "validate runs 8 of the 14 batches of its examples over its 2 sets, 4 at most each"
        " (trainer.limit_val_batches 4): its scores cover part of the set; set --trainer.limit_val_batches"
        " 1.0 for all of it."
    )  # "runs 5 of the 42 batches" beside bars of 4/4 read like a broken limit


def test_an_integer_limit_under_ddp_is_per_process_and_predictions_are_named():
    with pytest.warns(
        UserWarning,
        match=r"predict runs 2 of the 3 batches of its examples per process .*"
        r"its predictions cover part of the set",
    ):
        warn_if_partial(trainer("predict", [2], [3], 2, world_size=2), "predict")


@pytest.mark.parametrize(("counts", "limit"), [([9.0], 1.0), ([12], 12), ([float("inf")], 1.0)])
def test_no_warning_when_every_batch_runs(counts, limit):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_partial(trainer("test", counts, [9], limit), "test")


def test_a_fit_without_validation_data_counts_no_batches():
    """An MLM fit with validation_fraction 0 has no validation loader but a batch count: the model card's
    check of a cut validation failed on it, after training, and the run was left without its export."""
    assert batch_counts(trainer("validate", [float("inf")], [], 1.0), "validate") == (0, 0)


def test_a_split_cut_by_limit_eval_samples_is_named_only_by_the_stages_that_run_it():
    cuts = {"validation": (64, 872), "test": (64, 1821)}
    names = {"validate": ["validation"], "test": ["test"], "predict": ["test"]}
    datamodule = SimpleNamespace(
        evaluation_cuts=cuts, limit_eval_samples=64, split_names_for=lambda stage: names[stage]
    )
    validating = trainer("validate", [2], [2], 1.0)
    validating.datamodule = datamodule
    with pytest.warns(UserWarning) as caught:
        warn_if_partial(validating, "validate")
    assert [str(warning.message) for warning in caught] == [
        "validate runs the first 64 of the 872 examples of validation (data.init_args.limit_eval_samples 64):"
        " its scores cover part of the set; set --data.init_args.limit_eval_samples null for all of it."
    ]
