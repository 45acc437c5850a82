"""The model card's code for question answering carries the run's windowing, span and no-answer settings
(that it answers as `predict` does is tested in test_outside_package.py, on a fine-tuned export)."""

from __future__ import annotations

from neobert_tasks.export.model_card import CardFacts, answer_span_example, card_metadata, card_prose


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
    assert 'print(pipe("The headline\\n\\nThe text of the article."))' in titled
    embeddings = card_prose(CardFacts("neobert-nli", "NeoBERTModel"))
    code = embeddings.split("```python\n", 1)[1].split("```", 1)[0]
    assert "model.encode_query(" in code and "pipeline(" not in code
    compile(code, "card", "exec")


def test_the_model_index_files_each_evaluation_sets_scores_under_that_set():
    facts = CardFacts(
        "neobert-nli", "NeoBERTModel", data_description="local data",
        best_metrics={"val/stsb_dev/spearman": 0.8, "val/scifact/ndcg@10": 0.6, "val/loss": 1.0},
    )  # fmt: skip
    results = {result.metric_name: result for result in card_metadata(facts).eval_results}
    assert sorted(results) == ["val/scifact/ndcg@10", "val/stsb_dev/spearman"]
    assert results["val/stsb_dev/spearman"].dataset_name == "stsb_dev"
    assert results["val/stsb_dev/spearman"].metric_type == "spearmanr"  # the hub's metric id
    assert results["val/scifact/ndcg@10"].dataset_name == "scifact"
    glue = CardFacts(
        "neobert-sst2", "NeoBERTForSequenceClassification", dataset="nyu-mll/glue", dataset_config="sst2",
        best_metrics={"val/accuracy": 0.9},
    )  # fmt: skip
    [accuracy] = card_metadata(glue).eval_results
    assert (accuracy.dataset_type, accuracy.dataset_name, accuracy.dataset_config) == (
        "nyu-mll/glue",
        "sst2",
        "sst2",
    )


def test_scores_of_part_of_their_sets_say_so_and_stay_out_of_the_model_index():
    partial = "the first 64 of the 872 examples of validation"
    facts = CardFacts(
        "neobert-sst2", "NeoBERTForSequenceClassification", best_metrics={"val/accuracy": 0.9},
        partial_scores=partial,
    )  # fmt: skip
    assert card_metadata(facts).eval_results is None
    assert f"These scores cover part of their sets only ({partial}): they are not results" in card_prose(
        facts
    )


def test_the_table_shows_the_loss_the_checkpoint_was_chosen_by_the_metadata_does_not():
    facts = CardFacts(
        "neobert-mlm", "NeoBERTForMaskedLM", monitor="val/loss",
        best_metrics={"val/loss": 9.0598, "val/perplexity": 8584.1, "val/accuracy": 0.05, "epoch": 2},
    )  # fmt: skip
    card = card_prose(facts)
    assert "| `val/loss` | 9.0598 |" in card and "| `val/perplexity` | 8584.1000 |" in card
    assert sorted(result.metric_name for result in card_metadata(facts).eval_results) == [
        "val/accuracy",
        "val/perplexity",
    ]
    scored = card_prose(CardFacts("x", "NeoBERTForSequenceClassification", monitor="val/accuracy",
                                  best_metrics={"val/accuracy": 0.9, "val/loss": 0.3}))  # fmt: skip
    assert "`val/loss`" not in scored  # a loss the checkpoint was not chosen by stays out


def test_a_fit_stopped_inside_an_epoch_reports_the_fraction_it_trained():
    from types import SimpleNamespace

    from neobert_tasks.export.run_facts import _epochs_trained  # noqa: PLC0415

    def trainer(steps, batches, accumulate=1, epoch=1):
        return SimpleNamespace(global_step=steps, num_training_batches=batches,
                               accumulate_grad_batches=accumulate, current_epoch=epoch)  # fmt: skip

    assert _epochs_trained(trainer(30, 40)) == 0.75  # early stopping at step 30 of 40: Lightning said 1
    assert _epochs_trained(trainer(80, 40, epoch=2)) == 2
    assert _epochs_trained(trainer(6, 10, accumulate=4)) == 2  # 3 optimizer steps an epoch
    assert _epochs_trained(trainer(7, float("inf"), epoch=3)) == 3  # no length: whole epochs


def test_trainer_settings_are_reported_where_they_differ_from_no_op():
    from neobert_tasks.export.run_facts import changed_from  # noqa: PLC0415

    assert changed_from(1, 1.0)  # limit_train_batches 1: one batch an epoch, not the whole epoch
    assert not changed_from(1.0, 1.0) and not changed_from(1, 1) and not changed_from(None, None)
    assert changed_from(0.5, None) and not changed_from(0, None)  # a clipping value; 0 clips nothing
