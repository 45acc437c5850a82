"""``--export.push_to_hub``: a run's export goes to a hub repository once written, never at the cost of it.

The hub is replaced by `tests.export.test_hub.fake_hub` (the real ``HfApi``'s signatures, uploads copied
into a local folder). A fit pushes its export after writing it and ``metrics.json``; what the push needs
(a valid id, the hub switched on, a token) is refused before the first step; a push the hub refuses ends
the command with status 2 and one sentence, the export and scores kept; ``validate --export.after_validate``
pushes the checkpoint it exported.
"""

from __future__ import annotations

import json

import huggingface_hub
import pytest

from neobert_tasks.export import hub
from tests.cli.helpers import build_cli, command_error, quickstart_args
from tests.export.test_hub import fake_hub, http_refusal

pytestmark = pytest.mark.slow  # runs the command line end to end

REPO = "someone/quickstart-sentiment"


@pytest.fixture
def hub_online(monkeypatch):
    """The hub switched on, with a token, for the code under test (the tests run with HF_HUB_OFFLINE)."""
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")


def use_hub(monkeypatch, api) -> None:
    monkeypatch.setattr(hub, "HfApi", lambda: api)


def test_fit_pushes_its_export_after_writing_it(tmp_path, monkeypatch, hub_online, caplog):
    api = fake_hub(tmp_path / "remote")
    use_hub(monkeypatch, api)
    with caplog.at_level("INFO"):
        build_cli("fit", *quickstart_args(tmp_path), "--export.push_to_hub", REPO)
    run_dir = tmp_path / "runs" / "version_0"
    api.create_repo.assert_called_once_with(REPO, private=True, exist_ok=True)
    remote = tmp_path / "remote" / REPO
    export = run_dir / "export"
    assert sorted(p.name for p in remote.iterdir()) == sorted(p.name for p in export.iterdir())
    assert (remote / "model.safetensors").read_bytes() == (export / "model.safetensors").read_bytes()
    assert f'model="{REPO}"' in (remote / "README.md").read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["export_dir"] == str(export)
    assert f"Pushed {export} to the hub: https://huggingface.co/{REPO}/commit/0123abc" in caplog.text


def test_fit_refuses_an_invalid_repository_id_before_training(tmp_path, capsys):
    message = command_error(
        capsys, "fit", *quickstart_args(tmp_path), "--export.push_to_hub", "my model", tmp_path=tmp_path
    )
    assert message.startswith("export.push_to_hub 'my model' is not a hub repository id (owner/name)")


def test_fit_without_a_token_stops_before_the_first_step(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    message = command_error(
        capsys, "fit", *quickstart_args(tmp_path), "--export.push_to_hub", REPO, tmp_path=tmp_path
    )
    assert message == (
        f"export.push_to_hub '{REPO}' needs a Hugging Face token with write access: run `hf auth login`"
        " or set HF_TOKEN."
    )
    assert not list(tmp_path.rglob("*.ckpt"))


def test_a_refused_push_keeps_the_export_and_says_how_to_push_it(tmp_path, monkeypatch, hub_online, capsys):
    use_hub(monkeypatch, fake_hub(tmp_path / "remote", http_refusal(403)))
    with pytest.raises(SystemExit) as exit_info:
        build_cli("fit", *quickstart_args(tmp_path), "--export.push_to_hub", REPO)
    assert exit_info.value.code == 2
    export = tmp_path / "runs" / "version_0" / "export"
    assert (export / "model.safetensors").is_file() and (export.parent / "metrics.json").is_file()
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == (
        f"neobert_tasks: error: Could not push '{export}' to {REPO}: the token may not write to {REPO}"
        " (a write token, and a namespace that is yours); the folder is intact: push it with python -m"
        f" neobert_tasks.export {export} --push_to_hub {REPO}."
    )


def test_validate_pushes_the_checkpoint_it_exported(tmp_path, monkeypatch, hub_online):
    build_cli("fit", *quickstart_args(tmp_path))
    run_dir = tmp_path / "runs" / "version_0"
    api = fake_hub(tmp_path / "remote")
    use_hub(monkeypatch, api)
    build_cli(
        "validate", "--config", run_dir / "config.yaml", "--ckpt_path", "last",
        "--export.after_validate", "true", "--export.push_to_hub", REPO, "--export.hub_private", "false",
    )  # fmt: skip
    api.create_repo.assert_called_once_with(REPO, private=False, exist_ok=True)
    exported = run_dir / "validate" / "export" / "model.safetensors"
    assert (tmp_path / "remote" / REPO / "model.safetensors").read_bytes() == exported.read_bytes()
