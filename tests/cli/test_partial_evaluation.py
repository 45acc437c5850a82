"""validate and predict say when the batch limits a config carries (the debug preset's) leave examples out."""

from __future__ import annotations

import warnings

import pytest

from tests.cli.helpers import glue_args, run_cli

pytestmark = pytest.mark.slow  # runs the command line end to end


def test_validate_and_predict_cut_by_the_debug_presets_limits_say_so(tmp_path):
    # The debug preset runs 4 batches; 200 examples in batches of 32 are 7.
    args = [*glue_args("sst2", tmp_path), "--data.init_args.limit_eval_samples", "200"]
    for subcommand, produced in (("validate", "scores"), ("predict", "predictions")):
        with pytest.warns(
            UserWarning, match=rf"^{subcommand} runs 4 of the 7 batches .* its {produced} cover"
        ):
            run_cli(subcommand, *args, tmp_path=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli("validate", *args, "--trainer.limit_val_batches", "1.0", tmp_path=tmp_path)
    assert not [warning for warning in caught if "batches of its examples" in str(warning.message)]


def test_validate_and_predict_of_splits_cut_by_limit_eval_samples_say_so(tmp_path):
    """The debug preset's limit_eval_samples (64) cut the split before any batch: a GLUE submission file of
    64 of SST-2's 872 validation rows was written without a word."""
    args = glue_args("sst2", tmp_path)
    for subcommand, produced in (("validate", "scores"), ("predict", "predictions")):
        with pytest.warns(
            UserWarning,
            match=rf"^{subcommand} runs the first 64 of the 872 examples of validation"
            rf" \(data.init_args.limit_eval_samples 64\): its {produced} cover part of the set; set"
            r" --data.init_args.limit_eval_samples null for all of it\.$",
        ):
            run_cli(subcommand, *args, tmp_path=tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli("validate", *args, "--data.init_args.limit_eval_samples", "null", tmp_path=tmp_path)
    assert not [warning for warning in caught if "limit_eval_samples" in str(warning.message)]
