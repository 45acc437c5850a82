"""Task heads over the NeoBERT backbone: MLM, sequence and token classification, extractive QA.

The MLM ``decoder`` and the sequence classifier's ``dense``/``classifier`` follow the official
checkpoint and reference code, so checkpoints move both ways. Token classification and QA have no
official head; they use Hugging Face's names (``classifier`` per token, ``qa_outputs``).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_outputs import (
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from neobert_tasks.model.configuration import NeoBERTConfig
from neobert_tasks.model.modeling import NeoBERTModel, NeoBERTPreTrainedModel
from neobert_tasks.model.padding import first_token_index


def _head_linear(in_features: int, out_features: int) -> nn.Linear:
    """A new task-head layer, initialised from ``classifier_init_range`` (see ``_init_weights``)."""
    layer = nn.Linear(in_features, out_features)
    layer.is_task_head = True
    return layer


def infer_problem_type(config: NeoBERTConfig, labels: torch.Tensor) -> str:
    """Hugging Face's rule: one label → regression, integer labels → single-label, else multi-label."""
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int):
        return "single_label_classification"
    return "multi_label_classification"


def sequence_classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, problem_type: str, num_labels: int
) -> torch.Tensor:
    """MSE for regression, cross-entropy for single-label, BCE-with-logits for multi-label."""
    if problem_type == "regression":
        return nn.functional.mse_loss(logits.squeeze(-1).float(), labels.float().view(-1))
    if problem_type == "single_label_classification":
        return nn.functional.cross_entropy(logits.float().view(-1, num_labels), labels.view(-1))
    if problem_type == "multi_label_classification":
        return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
    raise ValueError(
        f"Unknown problem_type {problem_type!r}; use regression, single_label_classification "
        "or multi_label_classification."
    )


class _NeoBERTHeadModel(NeoBERTPreTrainedModel):
    """A backbone under ``self.model`` (the official ``model.`` prefix) plus a head."""

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.model = NeoBERTModel(config)

    def _encode(self, input_ids, attention_mask, kwargs) -> tuple[torch.Tensor, tuple | None]:
        kwargs.pop("return_dict", None)
        outputs = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        return outputs.last_hidden_state, outputs.hidden_states


class NeoBERTForMaskedLM(_NeoBERTHeadModel):
    """Backbone + ``decoder`` (hidden → vocabulary, with bias, not tied to the embedding)."""

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_output_embeddings(self) -> nn.Linear:
        return self.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.decoder = value

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> MaskedLMOutput:
        """``labels``: ``(batch, length)`` token ids to predict, -100 where nothing is predicted."""
        hidden, all_hidden = self._encode(input_ids, attention_mask, kwargs)
        logits = self.decoder(hidden)  # (batch, length, vocab)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float().flatten(0, -2), labels.flatten())
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=all_hidden)


class NeoBERTForSequenceClassification(_NeoBERTHeadModel):
    """[CLS] → dropout → ``dense`` → tanh → dropout → ``classifier``, as the official head."""

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.dense = _head_linear(config.hidden_size, config.hidden_size)
        self.classifier = _head_linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> SequenceClassifierOutput:
        """``labels``: ``(batch,)`` class ids, ``(batch,)`` floats (regression) or ``(batch, labels)``
        multi-hot (multi-label); the loss follows ``config.problem_type``."""
        # Only [CLS] is read: the last block computes its output projection and FFN for it alone.
        kwargs.setdefault("first_token_only", True)
        hidden, all_hidden = self._encode(input_ids, attention_mask, kwargs)
        if hidden.shape[1] > 1 and attention_mask is not None:  # every token came back: find [CLS]
            hidden = hidden[first_token_index(attention_mask.bool())]  # (batch, 1, hidden)
        pooled = self.dropout(hidden[:, 0])  # the [CLS] token, (batch, hidden)
        pooled = self.dropout(torch.tanh(self.dense(pooled)))
        logits = self.classifier(pooled)  # (batch, num_labels)
        loss = None
        if labels is not None:
            problem_type = infer_problem_type(self.config, labels)
            loss = sequence_classification_loss(logits, labels, problem_type, self.num_labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=all_hidden)


class NeoBERTForTokenClassification(_NeoBERTHeadModel):
    """Every token's hidden state → dropout → ``classifier`` (NER, tagging)."""

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = _head_linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs) -> TokenClassifierOutput:
        """``labels``: ``(batch, length)`` tag ids, -100 on tokens that carry no label."""
        hidden, all_hidden = self._encode(input_ids, attention_mask, kwargs)
        logits = self.classifier(self.dropout(hidden))  # (batch, length, num_labels)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=all_hidden)


class NeoBERTForQuestionAnswering(_NeoBERTHeadModel):
    """Every token's hidden state → ``qa_outputs`` (hidden → 2): answer start and end logits."""

    def __init__(self, config: NeoBERTConfig):
        super().__init__(config)
        self.qa_outputs = _head_linear(config.hidden_size, 2)
        self.post_init()

    def forward(
        self, input_ids=None, attention_mask=None, start_positions=None, end_positions=None, **kwargs
    ) -> QuestionAnsweringModelOutput:
        """``start_positions``/``end_positions``: ``(batch,)`` token indices of the answer span (0 =
        [CLS] for no answer); positions outside the input are ignored in the loss."""
        hidden, all_hidden = self._encode(input_ids, attention_mask, kwargs)
        start_logits, end_logits = self.qa_outputs(hidden).unbind(-1)  # (batch, length) each
        loss = None
        if start_positions is not None and end_positions is not None:
            length = start_logits.shape[1]
            losses = []
            for logits, positions in ((start_logits, start_positions), (end_logits, end_positions)):
                logits = logits.float()
                if attention_mask is not None:  # padding is no candidate: the loss must not depend on it
                    logits = logits.masked_fill(attention_mask == 0, torch.finfo(logits.dtype).min)
                losses.append(
                    nn.functional.cross_entropy(logits, positions.clamp(0, length), ignore_index=length)
                )
            loss = (losses[0] + losses[1]) / 2
        return QuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=all_hidden
        )
