"""Push an export folder to the Hugging Face hub: ``--export.push_to_hub REPO`` of a run, and
``python -m neobert_tasks.export MODEL_DIR --push_to_hub REPO``.

The folder already is a complete hub model (weights, config with ``auto_map``, remote code, tokenizer, card,
sentence-transformers files), so the push is ``huggingface_hub``'s ``create_repo`` and ``upload_folder``. What
this module adds is what a user needs around them: the repository id and the credentials are checked before
a fit spends hours training, the card's usage code names the repository instead of a local folder, and a
failed push says why in one sentence and how to push the same folder again, which stays intact.
"""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, OfflineModeIsEnabled
from huggingface_hub.utils import validate_repo_id

from neobert_tasks.errors import ConfigError, UserInputError

# huggingface_hub 2 talks to the hub through httpx2, 1.x through httpx; neither wraps its network errors.
try:
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError
NETWORK_ERRORS = (TransportError,)

# The card's usage code loads "path/to/folder" (model_card.py); on the hub the repository id loads it.
CARD_FOLDER_PLACEHOLDER = '"path/to/folder"'


class HubPushError(UserInputError):
    """The hub refused or could not take the push; the message names the folder and how to push it again."""


def check_repo_id(repo_id: str, option: str) -> None:
    """Refuse an id the hub would refuse (``owner/name`` or ``name``), naming the ``option`` that set it."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ConfigError(f"{option} {repo_id!r} is not a hub repository id (owner/name): {error}") from None


def check_can_push(repo_id: str, option: str) -> None:
    """Before any work: the id is valid, the hub is not switched off, and there is a token to push with."""
    check_repo_id(repo_id, option)
    if huggingface_hub.is_offline_mode():
        raise ConfigError(f"{option} {repo_id!r} needs the hub, but HF_HUB_OFFLINE is set.")
    if huggingface_hub.get_token() is None:
        raise ConfigError(
            f"{option} {repo_id!r} needs a Hugging Face token with write access: run `hf auth login` or set "
            "HF_TOKEN."
        )


def name_repository_in_card(folder: Path, repo_id: str) -> None:
    """Make the card's usage code load ``repo_id``, where the folder is about to live."""
    card = folder / "README.md"
    if card.is_file():
        text = card.read_text()
        if CARD_FOLDER_PLACEHOLDER in text:
            card.write_text(text.replace(CARD_FOLDER_PLACEHOLDER, f'"{repo_id}"'))


def push_folder(folder: str | Path, repo_id: str, private: bool = True, api: HfApi | None = None) -> str:
    """Create ``repo_id`` if needed (``private`` when new; an existing one keeps its visibility), upload every
    file of ``folder`` as one commit and return the commit's address."""
    folder, api = Path(folder), api or HfApi()
    command = f"python -m neobert_tasks.export {folder} --push_to_hub {repo_id}"
    retry = f"the folder is intact: push it with {command}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        name_repository_in_card(folder, repo_id)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, commit_message=f"Upload {folder.name} from neobert_tasks"
        )
    except OfflineModeIsEnabled:
        reason = "HF_HUB_OFFLINE is set"
        raise HubPushError(f"Could not push '{folder}' to {repo_id}: {reason}; {retry}.") from None
    except HfHubHTTPError as error:
        reason = refusal_reason(error, repo_id)
        raise HubPushError(f"Could not push '{folder}' to {repo_id}: {reason}; {retry}.") from None
    except (*NETWORK_ERRORS, ConnectionError) as error:
        raise HubPushError(f"Could not reach the hub to push '{folder}' ({error}); {retry}.") from None
    return str(getattr(commit, "commit_url", None) or commit)


def refusal_reason(error: HfHubHTTPError, repo_id: str) -> str:
    """What an HTTP refusal of the hub means for the user, in a few words."""
    status = getattr(error.response, "status_code", None)
    if status == 401:
        return "the hub did not accept the token (run `hf auth login` or set HF_TOKEN)"
    if status == 403:
        return f"the token may not write to {repo_id} (a write token, and a namespace that is yours)"
    if status == 404:
        return f"the namespace of {repo_id} does not exist or is not yours"
    detail = " ".join(str(error).split())
    return f"the hub answered {status}: {detail}" if status else detail
