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
    "feature-extraction": 'pipe("Any sentence.")',
}


# Extractive QA without a pipeline: transformers 5 removed the question-answering one. The best span of
# context tokens whose end is not before its start, at most 30 tokens, as the SQuAD post-processing picks.
ANSWER_SPAN_EXAMPLE = """import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

folder = "path/to/folder"
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
model = AutoModelForQuestionAnswering.from_pretrained(folder, trust_remote_code=True).eval()
question, context = "Who wrote it?", "The note was written by Ada."
inputs = tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
offsets = inputs.pop("offset_mapping")[0]
with torch.no_grad():
    output = model(**inputs)
in_context = torch.tensor([part == 1 for part in inputs.sequence_ids(0)])
spans = output.start_logits[0][:, None] + output.end_logits[0][None, :]  # (start, end)
allowed = in_context[:, None] & in_context[None, :] & torch.ones_like(spans, dtype=torch.bool).triu().tril(29)
start, end = divmod(int(spans.masked_fill(~allowed, -torch.inf).argmax()), spans.shape[1])
print(context[offsets[start][0] : offsets[end][1]])"""


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
        command: The command that reproduces the run.
        license: Licence identifier for the metadata.
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
    command: str | None = None
    license: str = "mit"

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
    results = [
        EvalResult(
            task_type=facts.pipeline_tag,
            dataset_type=facts.dataset or "local",
            dataset_name=facts.dataset_config or facts.dataset or facts.data_description,
            dataset_config=facts.dataset_config,
            dataset_split="validation",
            metric_type=HUB_METRIC_IDS.get(name.split("_")[0], name),  # val/pearson → pearsonr
            metric_name=f"val/{name}",
            metric_value=round(float(value), 6),
        )
        for name, value in facts.scores.items()
    ]
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
        rows = [(f"`val/{name}`", f"{value:.4f}") for name, value in facts.scores.items()]
        sections += [f"## Validation results{chosen}", _table(("metric", "value"), rows)]
    auto_class = AUTO_CLASS_NAMES.get(facts.architecture, "AutoModel")
    if facts.pipeline_tag in EXAMPLE_INPUTS:
        example = (
            "from transformers import pipeline\n\n"
            f'pipe = pipeline("{facts.pipeline_tag}", model="path/to/folder", trust_remote_code=True)\n'
            f"{EXAMPLE_INPUTS[facts.pipeline_tag]}"
        )
    else:  # transformers 5 has no question-answering pipeline (4.x has)
        example = ANSWER_SPAN_EXAMPLE
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
            "Reproduce the run (needs `pip install neobert_tasks` and the data):",
            f"```bash\n{facts.command}\n```",
        ]
    longest = f"{facts.max_length} tokens" if facts.max_length else "the length it was trained with"
    limits = [
        f"- For English {facts.pipeline_tag} inputs like the training data; the bert-base-uncased tokenizer "
        f"lowercases text, and inputs are cut at {longest}.",
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
