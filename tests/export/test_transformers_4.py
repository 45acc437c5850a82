"""An export also loads where transformers 4 is installed, as many serving images still have it.

`python -m bench.transformers_4` (bench/README.md) loads tiny exports of every head in a venv per
transformers 4 release: under 4.55.4 and 4.57.6 the Auto classes, the text-classification,
token-classification and fill-mask pipelines and sentence-transformers give what transformers 5 gives, to
the last bit. 4.53 loads the model, but its pipeline finds no tokenizer for a model type it does not know;
4.51 lacks GradientCheckpointingLayer. What the tests here hold in place:
* the generated remote code imports from transformers only names that transformers 4.57 has, outside a
  ``try`` with an ``except ImportError`` fallback;
* that fallback (``torch.nn.init`` for ``transformers.initialization``, which transformers 4 lacks) runs;
* the tokenizer's ``tokenizer_config.json`` names a class transformers 4 knows;
* ``config.json`` says the MLM decoder is not tied to the embedding (transformers 4 ties by default).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import sys

import pytest
import torch
import transformers
from transformers import AutoTokenizer

from neobert_tasks.export.folder import LOAD_TIME_KEYS, save_portable_tokenizer
from neobert_tasks.export.remote_code import REMOTE_CODE_FILES, remote_code_source, write_remote_code
from neobert_tasks.model import NeoBERTConfig, NeoBERTForMaskedLM
from tests.conftest import REPO_ROOT, tiny_config_kwargs

# Every name the remote code imports from transformers without a fallback, all present in transformers
# 4.55 and 4.57 (AttentionInterface came in 4.51, GradientCheckpointingLayer in 4.52).
TRANSFORMERS_4_NAMES = {
    "transformers": {"AttentionInterface", "PreTrainedModel", "PretrainedConfig"},
    "transformers.modeling_layers": {"GradientCheckpointingLayer"},
    "transformers.modeling_outputs": {
        "BaseModelOutput", "MaskedLMOutput", "QuestionAnsweringModelOutput", "SequenceClassifierOutput",
        "TokenClassifierOutput",
    },
}  # fmt: skip


def _unguarded_transformers_imports(tree: ast.Module) -> dict[str, set[str]]:
    """Names imported from transformers anywhere in ``tree`` except under ``try: … except ImportError``."""
    guarded = {
        id(node)
        for statement in ast.walk(tree)
        if isinstance(statement, ast.Try)
        and any(ast.unparse(handler.type or ast.Name("")) == "ImportError" for handler in statement.handlers)
        for node in ast.walk(ast.Module(body=statement.body, type_ignores=[]))
    }
    imported: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        from_transformers = isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "transformers"
        )
        if from_transformers and id(node) not in guarded:
            imported.setdefault(node.module, set()).update(alias.name for alias in node.names)
    return imported


@pytest.mark.parametrize("file_name", list(REMOTE_CODE_FILES))
def test_remote_code_imports_only_what_transformers_4_has(file_name):
    imported = _unguarded_transformers_imports(ast.parse(remote_code_source(file_name)))
    for module, names in imported.items():
        missing = names - TRANSFORMERS_4_NAMES.get(module, set())
        assert not missing, (
            f"{file_name} imports {sorted(missing)} from {module}: check it with transformers 4"
        )


def test_remote_code_initialises_weights_with_torch_where_transformers_has_no_initialization(
    tmp_path, monkeypatch
):
    package = tmp_path / "neobert_remote"
    package.mkdir()
    (package / "__init__.py").write_text("")
    write_remote_code(package)
    monkeypatch.delattr(transformers, "initialization", raising=False)
    monkeypatch.setitem(sys.modules, "transformers.initialization", None)  # as in transformers 4
    monkeypatch.syspath_prepend(str(tmp_path))
    modeling = importlib.import_module("neobert_remote.modeling_neobert")
    assert modeling.init is torch.nn.init
    config_class = importlib.import_module("neobert_remote.configuration_neobert").NeoBERTConfig
    config = config_class(**{**tiny_config_kwargs(), "embedding_init_range": 0.5, "decoder_init_range": 0.02})
    model = modeling.NeoBERTForSequenceClassification(config)
    embedding = model.model.encoder.weight.detach()
    assert 0.45 < float(embedding.std()) < 0.55 and float(embedding[config.pad_token_id].abs().sum()) == 0
    assert 0.015 < float(model.model.transformer_encoder[0].qkv.weight.detach().std()) < 0.025
    assert torch.equal(model.model.layer_norm.weight, torch.ones_like(model.model.layer_norm.weight))
    for name in [name for name in sys.modules if name.startswith("neobert_remote")]:
        monkeypatch.delitem(sys.modules, name)


def test_exported_tokenizer_config_names_a_class_transformers_4_knows(tmp_path):
    source = REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased"
    tokenizer = AutoTokenizer.from_pretrained(source)
    save_portable_tokenizer(tokenizer, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    # transformers 5 wrote TokenizersBackend, which transformers 4 refuses.
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert not set(LOAD_TIME_KEYS) & set(config)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    texts = ["A gripping, beautifully shot film!", "naïve café [MASK] [SEP] x"]
    assert reloaded(texts)["input_ids"] == tokenizer(texts)["input_ids"]
    assert (reloaded.pad_token, reloaded.mask_token, reloaded.model_max_length) == ("[PAD]", "[MASK]", 512)


def test_exported_tokenizer_json_keeps_no_truncation_or_padding_of_the_run(tmp_path):
    from tokenizers import Tokenizer

    tokenizer = AutoTokenizer.from_pretrained(REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased")
    # What a SQuAD run's last call leaves in the backend: question and context, cut in the context.
    tokenizer("what?", "word " * 50, truncation="only_second", max_length=16, stride=4, padding="max_length")
    save_portable_tokenizer(tokenizer, tmp_path, 16)
    state = json.loads((tmp_path / "tokenizer.json").read_text())
    assert state["truncation"] is None and state["padding"] is None
    # Read alone (the tokenizers library, text-embeddings-inference), it used to refuse a single sentence.
    alone = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert len(alone.encode("word " * 50).ids) == 52
    reloaded = AutoTokenizer.from_pretrained(tmp_path)
    assert len(reloaded("word " * 50, truncation=True)["input_ids"]) == 16  # model_max_length still cuts
    # A re-export of an export written before this fix: transformers copied that state into the config.
    with_state = tmp_path / "earlier"
    tokenizer.save_pretrained(with_state)
    save_portable_tokenizer(AutoTokenizer.from_pretrained(with_state), tmp_path / "again", 16)
    again = json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())
    assert not {"max_length", "stride", "truncation_strategy", "pad_to_multiple_of"} & set(again)


def test_saved_config_says_the_mlm_decoder_is_not_the_embedding(tmp_path):
    """transformers 4 ties the output embedding to the input one unless config.json says otherwise: the
    MLM export's fill-mask pipeline there ranked tokens with the embedding instead of the trained decoder."""
    model = NeoBERTForMaskedLM(NeoBERTConfig(**tiny_config_kwargs()))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    reloaded = NeoBERTForMaskedLM.from_pretrained(tmp_path)
    assert not torch.equal(reloaded.decoder.weight, reloaded.model.encoder.weight)
    assert torch.equal(reloaded.decoder.weight, model.decoder.weight)
