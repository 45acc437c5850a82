"""The export's ``README.md``: a Hugging Face model card, metadata and prose, written from the run's facts.

The YAML metadata (base model, library, pipeline tag, licence, datasets, metrics and a ``model-index``
with the best validation scores) is built with ``huggingface_hub``'s card classes, so the hub and its
tools read it as they read any card. The prose says what the model does, on which labels and data, with
which hyper-parameters and command it was trained, how to load it without neobert_tasks, and its limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from neobert_tasks.model import AUTO_CLASSES

# Head class → the transformers pipeline that serves it.
PIPELINE_TAGS = {
    "NeoBERTForSequenceClassification": "text-classification",
    "NeoBERTForTokenClassification": "token-classification",
    "NeoBERTForQuestionAnswering": "question-answering",
    "NeoBERTForMaskedLM": "fill-mask",
    "NeoBERTModel": "feature-extraction",
}
# Head class → the Auto class that loads it.
AUTO_CLASS_NAMES = {head.__name__: auto.__name__ for auto, head in AUTO_CLASSES.items()}
# Our metric names → the hub's metric ids, where they differ.
HUB_METRIC_IDS = {"matthews": "matthews_correlation", "pearson": "pearsonr", "spearman": "spearmanr"}
EXAMPLE_INPUTS = {
    "text-classification": 'pipe("A gripping, beautifully shot film.")',
    "token-classification": 'pipe("Ada Lovelace worked with Charles Babbage in London.")',
    "fill-mask": 'pipe("Paris is the [MASK] of France.")',
}
# The pipeline's options that make it read the model as `predict` does: a word's tag is its first token's.
PIPELINE_OPTIONS = {"token-classification": ', aggregation_strategy="first"'}
# A long document trained with titles read "title, blank line, text" (data/long_document.py).
TITLED_EXAMPLE_INPUT = 'pipe("The headline\\n\\nThe text of the article.")'
# An embedding model: sentence-transformers pools, normalises and adds the run's query prompt.
EMBEDDING_EXAMPLE = """from sentence_transformers import SentenceTransformer

model = SentenceTransformer("path/to/folder", trust_remote_code=True)
queries = model.encode_query(["What is NeoBERT?"])  # with the run's query prompt, if it has one
documents = model.encode_document(["NeoBERT is an encoder for English text."])
print(model.similarity(queries, documents))"""

# A model trained on sentence pairs (MNLI, STS-B, a text_pair_column) reads a pair.
PAIR_EXAMPLE_INPUT = 'pipe({"text": "A man is playing a guitar.", "text_pair": "Someone plays music."})'

# Extractive QA without a pipeline: transformers 5 removed the question-answering one. The card's code
# picks what `predict` picks (tasks/qa_postprocessing.py): windows of the context as the datamodule cuts
# them, in each the `n_best_size` highest starts and ends, spans inside the context at most
# `max_answer_length` tokens long, the best over all windows; for SQuAD v2.0 "" when the smallest [CLS]
# score of the windows beats that span by more than the threshold. {placeholders} are the run's settings.
ANSWER_SPAN_EXAMPLE = """import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

folder = "path/to/folder"
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True).eval()


def answer(question, context, max_length={max_length}, doc_stride={doc_stride},
           max_answer_length={max_answer_length}, n_best_size={n_best_size}, null_threshold={null_threshold}):
    \"\"\"The best span over windows of the context; "" (no answer) when null_threshold is set (SQuAD v2.0)
    and the [CLS] score beats the span's by more than it.\"\"\"
    inputs = tokenizer(question.lstrip(), context, truncation="only_second", max_length=max_length,
                       stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                       padding=True, return_tensors="pt")
    offsets = inputs.pop("offset_mapping")
    with torch.no_grad():
        output = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    best, text, null = -torch.inf, "", torch.inf
    for window in range(len(offsets)):
        real = inputs["attention_mask"][window].bool()
        starts = output.start_logits[window].masked_fill(~real, -torch.inf)
        ends = output.end_logits[window].masked_fill(~real, -torch.inf)
        null = min(null, float(starts[0] + ends[0]))
        in_context = torch.tensor([part == 1 for part in inputs.sequence_ids(window)])
        count = min(n_best_size, int(real.sum()))
        top_starts = torch.zeros_like(in_context).index_fill(0, starts.topk(count).indices, True)
        top_ends = torch.zeros_like(in_context).index_fill(0, ends.topk(count).indices, True)
        spans = starts[:, None] + ends[None, :]  # (start, end)
        allowed = (in_context & top_starts)[:, None] & (in_context & top_ends)[None, :]
        allowed &= torch.ones_like(allowed).triu().tril(max_answer_length - 1)
        score, position = spans.masked_fill(~allowed, -torch.inf).flatten().max(0)
        if score > best:
            start, end = divmod(int(position), spans.shape[1])
            best, text = float(score), context[offsets[window][start][0] : offsets[window][end][1]]
    return "" if null_threshold is not None and null - best > null_threshold else text


print(answer("Who wrote it?", "The note was written by Ada."))"""
# What the recipe assumes where the run did not record a setting: the QA task's and datamodule's defaults.
ANSWER_DEFAULTS = {"max_length": 384, "doc_stride": 128, "max_answer_length": 30, "n_best_size": 20}


def answer_span_example(settings: dict[str, Any]) -> str:
    """The QA card's code with the run's windowing and span settings as the function's defaults."""
    values = {**ANSWER_DEFAULTS, **{key: value for key, value in settings.items() if value is not None}}
    threshold = values.get("null_score_diff_threshold") if settings.get("version_2") else None
    return ANSWER_SPAN_EXAMPLE.format(
        **{key: values[key] for key in ANSWER_DEFAULTS}, null_threshold=threshold
    )


@dataclass
class CardFacts:
    """What a model card says about one exported model.

    Attributes:
        model_name: Title of the card (the run's name).
        architecture: The exported class (``NeoBERTForSequenceClassification``, …).
        base_model: Hub id the fine-tuning started from, if it started from one.
        label_names: Class or tag names in id order, if the head has labels.
        dataset: Hub id of the training data, if it came from the hub (or is a copy of a hub dataset).
        dataset_config: The hub dataset's configuration (GLUE task), if any.
        data_description: Where the data came from, in words (Markdown).
        initialisation: What the weights started from, in words (Markdown).
        best_metrics: Best validation scores, ``val/<name>`` → value, with ``epoch`` and ``step``.
        monitor: The metric the best checkpoint was chosen on.
        hyperparameters: Training settings worth reporting, name → value.
        max_length: Longest input in tokens the model was trained with.
        answer_settings: Question answering: the windowing and span settings `predict` used (``max_length``,
            ``doc_stride``, ``max_answer_length``, ``n_best_size``, ``version_2``,
            ``null_score_diff_threshold``).
        long_inputs: What becomes of an input longer than ``max_length``, when it is not simply cut there.
        text_pairs: Whether the model classifies pairs of texts (its example then passes a pair).
        titled: Whether each input was a title, a blank line, then the text (long documents with titles).
        command: The command that reproduces the run.
        license: Licence identifier for the metadata.
        partial_scores: How the validation scores cover only part of their sets, in words (a sample
            limit or a batch limit); None when they cover all of them. Partial scores stay out of the
            ``model-index``, where they would read as results on the sets.
    """

    model_name: str
    architecture: str
    base_model: str | None = None
    label_names: list[str] | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    data_description: str = "local data"
    initialisation: str = "NeoBERT"
    best_metrics: dict[str, float] = field(default_factory=dict)
    monitor: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    max_length: int | None = None
    answer_settings: dict[str, Any] = field(default_factory=dict)
    long_inputs: str | None = None
    text_pairs: bool = False
    titled: bool = False
    command: str | None = None
    license: str = "mit"
    partial_scores: str | None = None

    @property
    def pipeline_tag(self) -> str:
        return PIPELINE_TAGS.get(self.architecture, "feature-extraction")

    @property
    def scores(self) -> dict[str, float]:
        """The validation scores without the ``val/`` prefix, losses and bookkeeping left out."""
        return {
            name.removeprefix("val/"): value
            for name, value in self.best_metrics.items()
            if name.startswith("val/") and not name.endswith("loss")
        }


def card_metadata(facts: CardFacts) -> ModelCardData:
    """The card's YAML metadata, with a ``model-index`` of the best validation scores."""
    scores = {} if facts.partial_scores else facts.scores
    results = [_eval_result(facts, name, value) for name, value in scores.items()]
    return ModelCardData(
        model_name=facts.model_name,
        base_model=facts.base_model,
        library_name="transformers",
        pipeline_tag=facts.pipeline_tag,
        license=facts.license,
        language="en",
        datasets=[facts.dataset] if facts.dataset else None,
        metrics=sorted({result.metric_type for result in results}) or None,
        tags=["neobert", "neobert_tasks", facts.pipeline_tag, "sentence-transformers"],
        eval_results=results or None,
    )


def _eval_result(facts: CardFacts, name: str, value: float) -> EvalResult:
    """One score of the ``model-index``. A name with a set (``stsb_dev/spearman``, an embedding model's
    evaluation sets) is filed under that set, not under the training data."""
    evaluation_set, _, metric = name.partition("/") if "/" in name else ("", "", name)
    return EvalResult(
        task_type=facts.pipeline_tag,
        dataset_type="local" if evaluation_set else facts.dataset or "local",
        dataset_name=evaluation_set or facts.dataset_config or facts.dataset or facts.data_description,
        dataset_config=None if evaluation_set else facts.dataset_config,
        dataset_split="validation",
        metric_type=HUB_METRIC_IDS.get(metric.split("_")[0], metric),  # val/pearson → pearsonr
        metric_name=f"val/{name}",
        metric_value=round(float(value), 6),
    )


def _table(header: tuple[str, str], rows: list[tuple[Any, Any]]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {left} | {right} |" for left, right in rows])


def card_prose(facts: CardFacts) -> str:
    """The card's Markdown body."""
    start = f"[{facts.base_model}](https://huggingface.co/{facts.base_model})" if facts.base_model else None
    sections = [
        f"# {facts.model_name}",
        f"NeoBERT trained for **{facts.pipeline_tag}** (`{facts.architecture}`) on {facts.data_description} "
        f"with neobert_tasks, starting from {start or facts.initialisation}. The folder holds its own "
        "modelling code (`modeling_neobert.py`), so it loads with transformers alone.",
    ]
    if facts.label_names:
        sections += ["## Labels", _table(("id", "label"), list(enumerate(facts.label_names)))]
    if facts.scores:
        where = ", ".join(
            f"{key} {facts.best_metrics[key]}" for key in ("epoch", "step") if key in facts.best_metrics
        )
        # A fit's export is its best checkpoint; `validate --export.after_validate` exports the one it scored.
        chosen = f" (best `{facts.monitor}`, {where})" if facts.monitor else f" ({where})" if where else ""
        # The metric the checkpoint was chosen by is shown even when it is a loss (MLM's), which the
        # metadata leaves out.
        monitored = {key: facts.best_metrics[key] for key in [facts.monitor] if key in facts.best_metrics}
        shown = {**{f"val/{name}": value for name, value in facts.scores.items()}, **monitored}
        rows = [(f"`{name}`", f"{value:.4f}") for name, value in shown.items()]
        sections += [f"## Validation results{chosen}", _table(("metric", "value"), rows)]
        if facts.partial_scores:
            partial = f"These scores cover part of their sets only ({facts.partial_scores}): they are not"
            sections += [partial + " results on the sets, and the metadata leaves them out."]
    auto_class = AUTO_CLASS_NAMES.get(facts.architecture, "AutoModel")
    if facts.pipeline_tag in EXAMPLE_INPUTS:
        pairs = facts.text_pairs and facts.pipeline_tag == "text-classification"
        call = PAIR_EXAMPLE_INPUT if pairs else EXAMPLE_INPUTS[facts.pipeline_tag]
        call = TITLED_EXAMPLE_INPUT if facts.titled else call
        options = PIPELINE_OPTIONS.get(facts.pipeline_tag, "")
        example = (
            "from transformers import pipeline\n\n"
            f'pipe = pipeline("{facts.pipeline_tag}", model="path/to/folder", trust_remote_code=True'
            f"{options})\n"
            f"print({call})"
        )
    elif facts.pipeline_tag == "feature-extraction":
        example = EMBEDDING_EXAMPLE
    else:  # transformers 5 has no question-answering pipeline (4.x has)
        example = answer_span_example(facts.answer_settings)
    sections += [
        "## Use it",
        f"```python\n{example}\n```",
        f"`{auto_class}.from_pretrained(folder, trust_remote_code=True)` gives the model itself, "
        "`AutoTokenizer.from_pretrained(folder, trust_remote_code=True)` its tokenizer, and "
        "`SentenceTransformer(folder, trust_remote_code=True)` sentence embeddings (the backbone's pooled "
        "token states; see `1_Pooling/config.json`). `model.onnx`, when present, runs in onnxruntime with "
        "`input_ids` and `attention_mask` of any batch size and length.",
    ]
    if facts.hyperparameters:
        rows = [(f"`{name}`", f"`{value}`") for name, value in facts.hyperparameters.items()]
        sections += ["## Training", _table(("setting", "value"), rows)]
    if facts.command:
        sections += [
            "Reproduce the run (needs `pip install neobert_tasks` and the data; run it from the folder it was"
            " trained in, since the config's relative paths start there):",
            f"```bash\n{facts.command}\n```",
        ]
    longest = f"{facts.max_length} tokens" if facts.max_length else "the length it was trained with"
    cut = facts.long_inputs or f"inputs are cut at {longest} (`truncation=True` in a pipeline does the same)"
    limits = [
        f"- For English {facts.pipeline_tag} inputs like the training data; the bert-base-uncased tokenizer "
        f"lowercases text, and {cut}.",
        "- The scores above are on the validation split that also chose the best checkpoint, so they are "
        "optimistic for new data; evaluate on your own held-out data before relying on the model.",
        "- The model inherits the biases of NeoBERT's pretraining corpus and of the fine-tuning data, and "
        "the fine-tuning data's licence may restrict its use.",
    ]
    sections += ["## Intended use and limits", "\n".join(limits)]
    return "\n\n".join(sections) + "\n"


def write_model_card(directory: str | Path, facts: CardFacts) -> Path:
    """Write ``README.md`` (metadata and prose) into ``directory``; returns its path."""
    card = ModelCard(f"---\n{card_metadata(facts).to_yaml()}\n---\n\n{card_prose(facts)}")
    path = Path(directory) / "README.md"
    card.save(path)
    return path
