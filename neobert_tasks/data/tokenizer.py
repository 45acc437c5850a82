"""The tokenizer a datamodule names: a local directory or a hub id, loaded with one-sentence errors.

A name that is neither an existing path nor shaped like a hub id is a mistyped directory, reported as
missing rather than looked up on the hub. `TextDataModule` may train a tokenizer instead of loading one;
`asks_for_new_tokenizer` tells which names mean that.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from neobert_tasks.data.hub_access import hub_unreachable, offline_hub
from neobert_tasks.data.sources import DataError, MissingDataError

# tokenizers 0.23.1 and 0.23.2 return incomplete overflowing windows: the end of a text longer than one
# window is silently lost (0.23.3 fixed it). pyproject.toml excludes them; an environment that has one
# anyway (an image with fixed packages) is stopped where texts are cut into windows.
BROKEN_OVERFLOW_VERSIONS = ("0.23.1", "0.23.2")
# Files of which a tokenizer folder holds at least one (fast tokenizers, WordPiece, BPE, SentencePiece).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
# A hub id is "name" or "owner/name"; anything else that does not exist on disk is a mistyped path.
HUB_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local directory or a hub id, with a one-sentence error when neither works."""
    local = Path(name_or_path).expanduser()
    is_local = local.exists()
    if not is_local and not HUB_ID_PATTERN.match(name_or_path):
        raise MissingDataError(f"Tokenizer directory '{name_or_path}' does not exist.")
    if local.is_file():
        raise DataError(
            f"Tokenizer '{name_or_path}' is a file; give the folder that holds it (a tokenizer is a folder"
            f" of {', '.join(TOKENIZER_FILES[:3])}, …): '{local.parent}'."
        )
    if local.is_dir() and not any((local / name).is_file() for name in TOKENIZER_FILES):
        raise DataError(
            f"Tokenizer directory '{name_or_path}' holds none of {', '.join(TOKENIZER_FILES)}; give a folder"
            " that save_pretrained wrote (a run's export/ has one)."
        )
    offline = not is_local and hub_unreachable()
    try:
        with offline_hub(offline):
            tokenizer = AutoTokenizer.from_pretrained(str(local) if is_local else name_or_path)
    except (OSError, ValueError) as error:
        if offline:
            raise DataError(
                f"Could not load tokenizer '{name_or_path}': no such directory, the hub is not"
                " reachable (offline) and there is no cached copy; give a tokenizer folder with"
                " --data.init_args.tokenizer."
            ) from error
        # The hub client's explanation runs over several lines; its first one says what went wrong, unless
        # it ends in a colon and the list that follows is the point.
        lines = str(error).strip().splitlines() or [type(error).__name__]
        reason = " ".join(" ".join(lines).split()) if lines[0].rstrip().endswith(":") else lines[0]
        where = "from its local directory" if is_local else "(no such directory) from the Hugging Face hub"
        raise DataError(f"Could not load tokenizer '{name_or_path}' {where}: {reason}") from error
    if tokenizer.pad_token_id is None:
        raise DataError(f"Tokenizer '{name_or_path}' has no padding token, which dynamic padding needs.")
    return tokenizer


def asks_for_new_tokenizer(name: str | None) -> bool:
    """Whether `name` means "train a tokenizer and save it here": no name at all, or a path that does not
    exist and is not a hub id "owner/name" (a bare "name" could be either; it is taken for a path)."""
    exists = name is not None and Path(name).expanduser().exists()
    is_hub_id = name is not None and not exists and HUB_ID_PATTERN.match(name) and "/" in name
    return not (exists or is_hub_id)


@functools.cache
def tokenizers_version() -> str:
    return importlib.metadata.version("tokenizers")


def check_overflowing_windows() -> None:
    """Raise `DataError` when the installed tokenizers cuts long texts into windows wrongly."""
    version = tokenizers_version()
    if version in BROKEN_OVERFLOW_VERSIONS:
        raise DataError(
            f"tokenizers {version} loses the end of texts cut into overlapping windows (fixed in 0.23.3):"
            " pip install 'tokenizers>=0.23.3'."
        )
