"""Pushing an export to the hub (`neobert_tasks.export.hub`), without the hub.

The hub is out of reach here, so ``HfApi`` is replaced by an autospec of the real class (a call with an
argument the installed huggingface_hub does not take fails) whose upload copies the folder into a local
"remote". What is checked: what is uploaded and with which visibility, the card naming the repository, the
checks made before any work (id, offline mode, token), and one-sentence errors that say how to push the
intact folder again. The real ``HfApi`` is used once, under ``HF_HUB_OFFLINE``, for the offline refusal.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import huggingface_hub
import pytest
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError

from neobert_tasks.errors import ConfigError
from neobert_tasks.export import hub
from neobert_tasks.export.__main__ import main as export_main
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification
from tests.conftest import tiny_config_kwargs

try:  # what huggingface_hub 2 talks to the hub with; 1.x uses httpx (as neobert_tasks/export/hub.py knows)
    import httpx2 as http_client
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    import httpx as http_client

REPO = "someone/sst2-neobert"


def fake_hub(remote: Path, refusal: Exception | None = None) -> mock.NonCallableMagicMock:
    """An ``HfApi`` with the real signatures whose uploads land in ``remote / repo_id``."""
    api = mock.create_autospec(HfApi, instance=True)

    def upload_folder(*, repo_id, folder_path, **kwargs):
        if refusal is not None:
            raise refusal
        shutil.copytree(folder_path, remote / repo_id, dirs_exist_ok=True)
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/0123abc")

    api.upload_folder.side_effect = upload_folder
    return api


def http_refusal(status: int) -> HfHubHTTPError:
    request = http_client.Request("POST", "https://huggingface.co/api/repos/create")
    return HfHubHTTPError(f"{status} refused", response=http_client.Response(status, request=request))


@pytest.fixture
def export_folder(tmp_path) -> Path:
    """A folder as an export leaves it, as far as the push is concerned: files and a card."""
    folder = tmp_path / "run" / "export"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "README.md").write_text('pipe = pipeline("text-classification", model="path/to/folder")\n')
    return folder


def test_push_uploads_every_file_to_a_private_repository_whose_id_the_card_names(export_folder, tmp_path):
    api = fake_hub(tmp_path / "remote")
    address = hub.push_folder(export_folder, REPO, api=api)
    assert address == f"https://huggingface.co/{REPO}/commit/0123abc"
    api.create_repo.assert_called_once_with(REPO, private=True, exist_ok=True)
    remote = tmp_path / "remote" / REPO
    assert sorted(p.relative_to(remote) for p in remote.rglob("*")) == sorted(
        p.relative_to(export_folder) for p in export_folder.rglob("*")
    )
    assert f'model="{REPO}"' in (remote / "README.md").read_text()


def test_a_public_repository_when_asked(export_folder, tmp_path):
    api = fake_hub(tmp_path / "remote")
    hub.push_folder(export_folder, REPO, private=False, api=api)
    api.create_repo.assert_called_once_with(REPO, private=False, exist_ok=True)


@pytest.mark.parametrize(
    ("refusal", "reason"),
    [
        (http_refusal(401), "the hub did not accept the token (run `hf auth login` or set HF_TOKEN)"),
        (http_refusal(403), f"the token may not write to {REPO}"),
        (http_client.ConnectError("[Errno -2] Name or service not known"), "Could not reach the hub"),
    ],
)
def test_a_refused_push_says_why_and_how_to_push_the_intact_folder(export_folder, tmp_path, refusal, reason):
    before = {p: p.read_bytes() for p in export_folder.rglob("*") if p.is_file()}
    with pytest.raises(hub.HubPushError) as raised:
        hub.push_folder(export_folder, REPO, api=fake_hub(tmp_path / "remote", refusal))
    message = str(raised.value)
    assert reason in message and "\n" not in message
    command = f"python -m neobert_tasks.export {export_folder} --push_to_hub {REPO}"
    assert message.endswith(f"the folder is intact: push it with {command}.")
    assert set(before) == {p for p in export_folder.rglob("*") if p.is_file()}


def test_offline_mode_refuses_the_push_in_one_sentence(export_folder, monkeypatch):
    """The real client, switched off as the tests run it: no request is attempted."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(hub.HubPushError, match="HF_HUB_OFFLINE is set; the folder is intact"):
        hub.push_folder(export_folder, REPO, api=HfApi(token="hf_not_a_real_token"))


@pytest.mark.parametrize("repo_id", ["has space/model", "a/b/c", "-model"])
def test_an_invalid_repository_id_names_the_option(repo_id):
    with pytest.raises(ConfigError, match=rf"^export.push_to_hub '{repo_id}' is not a hub repository id"):
        hub.check_repo_id(repo_id, "export.push_to_hub")


def test_before_any_work_the_hub_must_be_on_and_a_token_present(monkeypatch):
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: True)
    with pytest.raises(ConfigError, match=f"--push_to_hub '{REPO}' needs the hub, but HF_HUB_OFFLINE is set"):
        hub.check_can_push(REPO, "--push_to_hub")
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(
        ConfigError, match="needs a Hugging Face token with write access: run `hf auth login`"
    ):
        hub.check_can_push(REPO, "--push_to_hub")
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")
    hub.check_can_push(REPO, "--push_to_hub")


@pytest.fixture
def model_folder(tmp_path) -> Path:
    folder = tmp_path / "model"
    config = NeoBERTConfig(**tiny_config_kwargs(), num_labels=2)
    NeoBERTForSequenceClassification(config).save_pretrained(folder)
    return folder


def test_export_command_pushes_the_folder_it_wrote(model_folder, tmp_path, monkeypatch, capsys):
    api = fake_hub(tmp_path / "remote")
    monkeypatch.setattr(hub, "HfApi", lambda: api)
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")
    output = tmp_path / "export"
    assert (
        export_main([str(model_folder), "--output", str(output), "--push_to_hub", REPO, "--no-hub_private"])
        == 0
    )
    api.create_repo.assert_called_once_with(REPO, private=False, exist_ok=True)
    remote = tmp_path / "remote" / REPO
    assert {"config.json", "model.safetensors", "modeling_neobert.py"} <= {p.name for p in remote.iterdir()}
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"Pushed {output} to the hub: https://huggingface.co/{REPO}/commit/0123abc"
    )


def test_export_command_offline_stops_before_writing(model_folder, tmp_path, capsys):
    """Under HF_HUB_OFFLINE (as the tests run): status 2, one line, nothing written."""
    if not huggingface_hub.is_offline_mode():
        pytest.skip("the test suite runs with HF_HUB_OFFLINE=1; this run does not")
    output = tmp_path / "export"
    assert export_main([str(model_folder), "--output", str(output), "--push_to_hub", REPO]) == 2
    error = capsys.readouterr().err.strip()
    assert (
        error
        == f"neobert_tasks.export: error: --push_to_hub '{REPO}' needs the hub, but HF_HUB_OFFLINE is set."
    )
    assert not output.exists()
