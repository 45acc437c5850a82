"""The model card's code for question answering carries the run's windowing, span and no-answer settings
(that it answers as `predict` does is tested in test_outside_package.py, on a fine-tuned export)."""

from __future__ import annotations

from neobert_tasks.export.model_card import CardFacts, answer_span_example, card_prose


def test_qa_card_code_takes_the_runs_settings():
    settings = {"max_length": 256, "doc_stride": 64, "max_answer_length": 12, "n_best_size": 5,
                "version_2": True, "null_score_diff_threshold": -1.5}  # fmt: skip
    code = answer_span_example(settings)
    assert "max_length=256, doc_stride=64," in code
    assert "max_answer_length=12, n_best_size=5, null_threshold=-1.5)" in code
    assert "null_threshold=None)" in answer_span_example({**settings, "version_2": False})
    assert "max_length=384, doc_stride=128," in answer_span_example({})  # the defaults of a fit
    compile(code, "card", "exec")


def test_a_qa_card_shows_the_answer_function_other_heads_a_pipeline():
    qa = card_prose(
        CardFacts("neobert-squad", "NeoBERTForQuestionAnswering", answer_settings={"max_answer_length": 7})
    )
    assert "def answer(" in qa and "max_answer_length=7," in qa
    classifier = card_prose(CardFacts("neobert-sst2", "NeoBERTForSequenceClassification"))
    assert "def answer(" not in classifier and 'pipeline("text-classification"' in classifier


def test_a_pair_classifiers_card_passes_a_pair():
    """An STS-B or MNLI model's card called the pipeline with one sentence."""
    pairs = card_prose(CardFacts("neobert-stsb", "NeoBERTForSequenceClassification", text_pairs=True))
    assert 'pipe({"text": "A man is playing a guitar.", "text_pair": "Someone plays music."})' in pairs
    single = card_prose(CardFacts("neobert-sst2", "NeoBERTForSequenceClassification"))
    assert '"text_pair"' not in single


def test_cards_show_the_call_that_reads_the_model_as_predict_does():
    """NER needs the first token's tag per word, a titled long document its title first, and an
    embedding model sentence-transformers (pooling, normalisation, the query prompt)."""
    ner = card_prose(CardFacts("neobert-conll2003", "NeoBERTForTokenClassification"))
    assert 'trust_remote_code=True, aggregation_strategy="first")' in ner
    titled = card_prose(CardFacts("neobert-hyperpartisan", "NeoBERTForSequenceClassification", titled=True))
    assert 'pipe("The headline\\n\\nThe text of the article.")' in titled
    embeddings = card_prose(CardFacts("neobert-nli", "NeoBERTModel"))
    code = embeddings.split("```python\n", 1)[1].split("```", 1)[0]
    assert "model.encode_query(" in code and "pipeline(" not in code
    compile(code, "card", "exec")
