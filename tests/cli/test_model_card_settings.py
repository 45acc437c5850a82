"""The export's card reports the training settings that change what a step does."""

from __future__ import annotations

import pytest

from tests.cli.helpers import glue_args, run_cli

pytestmark = pytest.mark.slow  # runs the command line end to end


def test_the_card_reports_accumulation_clipping_layer_decay_and_freezing(tmp_path):
    run_dir = run_cli(
        "fit", *glue_args("sst2", tmp_path),
        "--trainer.accumulate_grad_batches", "2", "--trainer.gradient_clip_val", "1.0",
        "--model.init_args.layer_decay", "0.9", "--model.init_args.freeze_layers", "1",
        tmp_path=tmp_path,
    )  # fmt: skip
    card = (run_dir / "export" / "README.md").read_text()
    for row in ("`accumulate_grad_batches` | `2`", "`gradient_clip_val` | `1.0`", "`layer_decay` | `0.9`",
                "`freeze_layers` | `1`"):  # fmt: skip
        assert row in card, row
    plain = run_cli("fit", *glue_args("sst2", tmp_path / "plain"), tmp_path=tmp_path / "plain")
    plain_card = (plain / "export" / "README.md").read_text()
    assert "accumulate_grad_batches" not in plain_card and "freeze" not in plain_card
