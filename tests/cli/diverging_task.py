"""A sequence-classification task whose training loss turns NaN at a chosen step, for the loss guard's tests.

Used from the command line as ``--model.class_path tests.cli.diverging_task.DivergingTask``: a NaN loss
gives NaN gradients, so the optimizer step that follows writes NaN into the weights, exactly what a
learning rate far too high or an fp16 overflow does, but at a step the test knows.
"""

from __future__ import annotations

from typing import Any

import torch

from neobert_tasks.tasks import SequenceClassificationTask


class DivergingTask(SequenceClassificationTask):
    """`SequenceClassificationTask` whose loss is NaN from optimizer step ``nan_from_step`` on.

    Args:
        nan_from_step: first step (as the loggers count them, from 0) whose training loss is NaN.
        kwargs: the arguments of `SequenceClassificationTask`.
    """

    def __init__(self, nan_from_step: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_from_step = nan_from_step

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_index)
        return loss * float("nan") if self.global_step >= self.nan_from_step else loss
