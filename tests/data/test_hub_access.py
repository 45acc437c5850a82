"""An unreachable hub fails a load at once, in one sentence naming the local way out; the offline switch it
relies on (module constants of huggingface_hub and datasets) still exists."""

from __future__ import annotations

import time

import datasets
import huggingface_hub.constants
import pytest

from neobert_tasks.data import DataError, hub_access
from neobert_tasks.data.sources import load_hub_splits
from neobert_tasks.data.tokenizer import load_tokenizer


def test_the_offline_switches_exist_and_are_restored():
    # Fails loudly when an upgrade of huggingface_hub or datasets renames the constants offline_hub sets.
    for module, name in hub_access.OFFLINE_SWITCHES:
        assert isinstance(getattr(module, name), bool), f"{module.__name__}.{name} is gone"
    before = [getattr(module, name) for module, name in hub_access.OFFLINE_SWITCHES]
    with hub_access.offline_hub():
        assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
    assert [getattr(module, name) for module, name in hub_access.OFFLINE_SWITCHES] == before


@pytest.fixture
def online_but_unreachable(monkeypatch):
    """Offline mode off, and a hub host whose name does not resolve: what a machine without network sees."""
    for module, name in hub_access.OFFLINE_SWITCHES:
        monkeypatch.setattr(module, name, False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "https://hub.invalid")


def test_an_unreachable_hub_is_found_by_one_probe(online_but_unreachable):
    assert hub_access.hub_unreachable()


def test_a_hub_dataset_without_network_fails_at_once_naming_data_dir(online_but_unreachable, tmp_path):
    start = time.perf_counter()
    with pytest.raises(DataError) as error:
        load_hub_splits("someone/not-cached", "sst2", cache_dir=str(tmp_path))
    assert time.perf_counter() - start < 10, "the load retried instead of failing at once"
    assert str(error.value) == (
        "Could not load hub dataset 'someone/not-cached' with config 'sst2': the hub is not reachable"
        " (offline) and there is no cached copy; pass a local folder of split files with"
        " --data.init_args.data_dir (README: Your own data)."
    )


def test_a_hub_tokenizer_without_network_fails_naming_the_option(online_but_unreachable):
    with pytest.raises(DataError, match=r"hub is not reachable .*--data.init_args.tokenizer\.$"):
        load_tokenizer("someone/not-cached")


def test_a_tokenizer_file_instead_of_its_folder_names_the_folder(tiny_tokenizer_dir):
    file = f"{tiny_tokenizer_dir}/tokenizer.json"
    with pytest.raises(
        DataError, match=rf"Tokenizer '{file}' is a file; give the folder .*: '{tiny_tokenizer_dir}'"
    ):
        load_tokenizer(file)  # was "from its local directory: Repo id must be in the form …"
