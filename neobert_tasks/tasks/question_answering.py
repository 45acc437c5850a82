"""Extractive question answering (SQuAD v1.1 and v2.0) scored with the official exact match and F1.

A question over a long context arrives as several windows (features); the model gives every token of a
window a start and an end logit. Evaluation collects, per window, its ``window_index`` and its logits
(trimmed to the window's length), gathers them from every DDP rank at the end of the epoch, turns them into
one answer per question with :func:`~neobert_tasks.tasks.qa_postprocessing.postprocess_predictions`
(windows are looked up in the datamodule's cached features, questions in its raw examples), and scores the
answers with :func:`~neobert_tasks.metrics.squad.squad_scores` on the 0-100 scale. Scores are computed
from the same gathered windows on every rank, so every rank logs the same values under the same names and
checkpointing or early stopping on ``val/f1`` behaves alike under DDP.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from neobert_tasks.data.keys import END_POSITIONS, MODEL_INPUT_KEYS, START_POSITIONS, WINDOW_INDEX
from neobert_tasks.data.splits import PREDICT_SPLIT
from neobert_tasks.errors import ConfigError
from neobert_tasks.metrics.squad import squad_scores
from neobert_tasks.model import NeoBERTForQuestionAnswering
from neobert_tasks.tasks.base import NeoBERTTask
from neobert_tasks.tasks.qa_postprocessing import QAPredictions, postprocess_predictions
from neobert_tasks.tasks.sequence_classification import split_suffix

POSITION_KEYS = (START_POSITIONS, END_POSITIONS)
# One evaluated window: its row in the tokenized split, its start logits and its end logits.
WindowLogits = tuple[int, np.ndarray, np.ndarray]


def window_logits(
    batch: dict[str, torch.Tensor], start: torch.Tensor, end: torch.Tensor
) -> list[WindowLogits]:
    """Per window of a batch: feature index and float32 CPU logits without the batch padding."""
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    starts, ends = start.detach().float().cpu().numpy(), end.detach().float().cpu().numpy()
    return [
        (index, starts[row, :length].copy(), ends[row, :length].copy())
        for row, (index, length) in enumerate(zip(batch[WINDOW_INDEX].tolist(), lengths, strict=True))
    ]


def gather_windows(windows: list[WindowLogits]) -> list[WindowLogits]:
    """The windows of every DDP rank (each rank gets all), sorted by feature index without repeats.

    Windows are ragged, which `LightningModule.all_gather` cannot stack; objects are gathered instead.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        parts: list[Any] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, windows)
        windows = [window for part in parts for window in part]
    return list({window[0]: window for window in sorted(windows, key=lambda window: window[0])}.values())


class QuestionAnsweringTask(NeoBERTTask):
    """Fine-tune ``NeoBERTForQuestionAnswering`` (per-token ``qa_outputs``: start and end logits).

    Logs ``val/exact_match``, ``val/f1`` and ``val/loss``; with ``version_2`` also ``val/has_ans_f1``,
    ``val/no_ans_f1`` (and their exact match), ``val/best_f1`` with ``val/best_f1_thresh`` (the best F1 any
    null-odds threshold reaches, and that threshold) and the question counts. ``predict`` writes
    ``predictions.json`` (question id → answer, the official format), with ``write_nbest``
    ``nbest_predictions.json``, and for v2.0 ``null_odds.json``.

    Args:
        version_2: SQuAD v2.0: questions may have no answer; linked from the datamodule.
        n_best_size: candidate start and end positions per window, and length of each n-best list.
        max_answer_length: longest predicted answer, in tokens.
        null_score_diff_threshold: v2.0: answer "" when the null score beats the best span by more than this.
        write_nbest: also write each question's n-best candidates when predicting.
        learning_rate: Peak learning rate of AdamW.
        kwargs: The options every task shares, declared in `NeoBERTTask`.
    """

    head_class = NeoBERTForQuestionAnswering
    head_modules = ("qa_outputs",)

    def __init__(
        self,
        version_2: bool = False,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
        write_nbest: bool = False,
        learning_rate: float = 3e-5,
        **kwargs: Any,
    ):
        for name, value in (("n_best_size", n_best_size), ("max_answer_length", max_answer_length)):
            if value < 1:
                raise ConfigError(f"model.init_args.{name} must be a positive integer, got {value}.")
        self.version_2, self.n_best_size, self.max_answer_length = version_2, n_best_size, max_answer_length
        self.null_score_diff_threshold, self.write_nbest = null_score_diff_threshold, write_nbest
        super().__init__(learning_rate=learning_rate, **kwargs)
        # Loss per evaluated split (dataloader index); torchmetrics syncs it over DDP ranks exactly.
        self.losses = nn.ModuleDict()
        self._windows: dict[int, list[WindowLogits]] = {}

    @staticmethod
    def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The model's inputs and the answer positions; ``window_index`` stays with the task."""
        return {key: value for key, value in batch.items() if key in MODEL_INPUT_KEYS or key in POSITION_KEYS}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "feature_lookup"):
            raise ConfigError("QuestionAnsweringTask needs a QuestionAnsweringDataModule (data.class_path).")
        # Created here rather than on first use so that the strategy moves them to the device.
        for index in range(max(len(datamodule.split_names_for(name)) for name in ("validate", "test"))):
            if str(index) not in self.losses:
                self.losses[str(index)] = MeanMetric()

    # ------------------------------------------------------------------------------------------------------
    # Evaluation.

    def evaluation_step(self, stage: str, batch, batch_index: int, dataloader_idx: int) -> None:
        outputs = self.model(**self.model_inputs(batch))
        if outputs.loss is not None:
            # The loss is a mean over the batch's windows; weighting by their count keeps the epoch value
            # exact across batches and DDP ranks, unlike self.log's per-batch mean.
            self.losses[str(dataloader_idx)].update(outputs.loss.detach(), weight=batch["input_ids"].shape[0])
        windows = window_logits(batch, outputs.start_logits, outputs.end_logits)
        self._windows.setdefault(dataloader_idx, []).extend(windows)

    def answer_questions(
        self, datamodule, split_name: str, windows: Sequence[WindowLogits]
    ) -> tuple[list[str], QAPredictions, list[list[str]] | None]:
        """Answers of the questions that have evaluated windows: their ids, the post-processed predictions
        and the gold answer texts (None for a split without answers)."""
        feature_indices = [window[0] for window in windows]
        example_indices, offsets = datamodule.feature_lookup(split_name, feature_indices)
        used = sorted(set(example_indices))
        position = {example: number for number, example in enumerate(used)}
        examples = datamodule.examples(split_name)
        if used != list(range(len(examples))):
            examples = examples.select(used)
        columns = [name for name in ("id", "context", "answers") if name in examples.column_names]
        rows = examples.select_columns(columns).to_dict()
        predictions = postprocess_predictions(
            rows["context"],
            [position[example] for example in example_indices],
            offsets,
            [window[1] for window in windows],
            [window[2] for window in windows],
            n_best_size=self.n_best_size,
            max_answer_length=self.max_answer_length,
            version_2=self.version_2,
            null_score_diff_threshold=self.null_score_diff_threshold,
        )
        gold = [answers["text"] for answers in rows["answers"]] if "answers" in rows else None
        ids = [str(question_id) for question_id in rows["id"]]
        return ids, predictions, gold

    def _split_scores(self, datamodule, split_name: str, windows: list[WindowLogits]) -> dict[str, float]:
        """Official SQuAD scores of one split's gathered windows (empty without windows or answers)."""
        if not windows:
            return {}
        ids, predictions, gold = self.answer_questions(datamodule, split_name, windows)
        if gold is None:
            return {}
        null_odds = dict(zip(ids, predictions.null_odds, strict=True)) if self.version_2 else None
        answers = dict(zip(ids, predictions.answers, strict=True))
        return squad_scores(answers, dict(zip(ids, gold, strict=True)), self.version_2, null_odds)

    def log_scores(self, stage: str, prefix: str) -> None:
        """Gather, post-process, score and log every evaluated split; clears the collected windows."""
        datamodule = self.trainer.datamodule
        windows_by_split, self._windows = self._windows, {}
        # Every rank walks the same splits in the same order, so the collective calls below line up.
        for index, split_name in enumerate(datamodule.split_names_for(stage)):
            windows = gather_windows(windows_by_split.get(index, []))
            suffix = split_suffix(split_name, index)
            for name, value in self._split_scores(datamodule, split_name, windows).items():
                self.log(f"{prefix}/{name}{suffix}", value, prog_bar=name == "f1", add_dataloader_idx=False)
            if split_name in datamodule.datasets and datamodule.has_answers(split_name):
                loss = self.losses[str(index)]
                self.log(f"{prefix}/loss{suffix}", loss.compute(), add_dataloader_idx=False)
                loss.reset()

    def on_validation_epoch_start(self) -> None:
        self._windows = {}  # drop what an interrupted evaluation left

    on_test_epoch_start = on_validation_epoch_start

    # ------------------------------------------------------------------------------------------------------
    # Prediction.

    # Post-processing reads each window's logits as an array: the prediction writer keeps them so.
    prediction_array_keys = ("start_logits", "end_logits")

    def predict_step(self, batch, batch_index, dataloader_idx: int = 0) -> dict[str, torch.Tensor]:
        inputs = {key: value for key, value in self.model_inputs(batch).items() if key not in POSITION_KEYS}
        outputs = self.model(**inputs)
        # Logits keep the batch padding (PredictionWriter needs tensors); post-processing ignores values
        # past each window's offsets.
        return {
            WINDOW_INDEX: batch[WINDOW_INDEX].cpu(),
            "start_logits": outputs.start_logits.float().cpu(),
            "end_logits": outputs.end_logits.float().cpu(),
        }

    def prediction_files(self, outputs: list[dict[str, list]], split_names: list[str], datamodule) -> dict:
        """Per predicted split: ``predictions.json`` (id → answer), optionally ``nbest_predictions.json``
        and, for v2.0, ``null_odds.json``; prefixed with the split name when several splits are predicted."""
        files = {}
        for split_name, split_outputs in zip(split_names, outputs, strict=True):
            prefix = "" if len(split_names) == 1 else f"{split_name}_"
            ids, predictions = self._predict_split(datamodule, split_name, split_outputs)
            contents = {"predictions.json": predictions.answers}
            if self.write_nbest:
                contents["nbest_predictions.json"] = predictions.nbest
            if self.version_2:
                contents["null_odds.json"] = finite_odds(predictions.null_odds)
            for name, values in contents.items():  # indented, with non-ASCII answers left readable
                text = json.dumps(dict(zip(ids, values, strict=True)), indent=2, ensure_ascii=False)
                files[prefix + name] = text + "\n"
            if split_name == PREDICT_SPLIT:  # the user's own questions: each with its answer, in file order
                examples = datamodule.examples(split_name)
                questions = dict(zip(examples["id"], examples["question"], strict=True))
                asked = [questions[question_id] for question_id in ids]
                rows = answer_rows(ids, asked, predictions, self.version_2)
                files["predict.jsonl"] = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        return files

    def _predict_split(
        self, datamodule, split_name: str, split_outputs: dict[str, list]
    ) -> tuple[list[str], QAPredictions]:
        """Question ids and predictions of one split from the flattened ``predict_step`` outputs."""
        columns = [split_outputs.get(key, []) for key in (WINDOW_INDEX, "start_logits", "end_logits")]
        windows = [
            (index, np.asarray(start, dtype=np.float32), np.asarray(end, dtype=np.float32))
            for index, start, end in sorted(zip(*columns, strict=True), key=lambda window: window[0])
        ]
        ids, predictions = [], QAPredictions(answers=[], nbest=[], null_odds=[])
        if windows:
            ids, predictions, _ = self.answer_questions(datamodule, split_name, windows)
        total = len(datamodule.examples(split_name))
        if len(ids) < total:
            rank_zero_warn(
                f"Only {len(ids)} of the {total} questions of split '{split_name}' were predicted"
                " (trainer.limit_predict_batches?); the files leave the others out."
            )
        return ids, predictions


# Odds written for a question with no candidate span (infinite odds): above any logit difference, and a
# number that strict JSON and the official v2.0 script read (null stopped the script; Infinity is not JSON).
NO_CANDIDATE_ODDS = 1e30


def answer_rows(
    ids: list[str], questions: list[str], predictions: QAPredictions, version_2: bool
) -> list[dict[str, Any]]:
    """Per question: ``id``, ``question``, ``answer`` ("" for none), its character ``start`` in the context
    and ``probability`` among the n-best spans (None without an answer), and for v2.0 the ``null_odds``."""
    rows = []
    for number, (question_id, question, answer) in enumerate(
        zip(ids, questions, predictions.answers, strict=True)
    ):
        best = next((span for span in predictions.nbest[number] if answer and span["text"] == answer), None)
        rows.append(
            {
                "id": question_id,
                "question": question,
                "answer": answer,
                "start": best["start"] if best else None,
                "probability": round(float(best["probability"]), 6) if best else None,
            }
        )
        if version_2:
            rows[-1]["null_odds"] = finite_odds(predictions.null_odds[number : number + 1])[0]
    return rows


def finite_odds(null_odds: list[float]) -> list[float]:
    """The null odds as ``null_odds.json`` holds them: infinite ones become `NO_CANDIDATE_ODDS`."""
    return [odds if math.isfinite(odds) else math.copysign(NO_CANDIDATE_ODDS, odds) for odds in null_odds]
