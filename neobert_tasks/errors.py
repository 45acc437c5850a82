"""Errors a user can cause through a config, a command line or a data file.

The command line prints their message, one sentence naming the file, key, column or value, and exits
with status 2 instead of showing a traceback (74, EX_IOERR, when the disk refused a write). Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator


class UserInputError(Exception):
    """Base of every error whose message alone tells the user what to fix."""


class ConfigError(UserInputError, ValueError):
    """A configuration value is invalid (unknown name, inconsistent sizes, value out of range)."""


class MissingPathError(UserInputError, FileNotFoundError):
    """A file or directory named in the configuration does not exist."""


class StorageError(UserInputError, OSError):
    """The disk refused a write (full, read-only, no permission, over a size limit); names the path."""


# errno values that mean "this storage cannot take the write", as opposed to a bug or a missing input.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
# Those that only a write gets: a data file that cannot be read is the data's fault, not the disk's.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG}


def error_chain(error: BaseException | None, context: bool = False) -> Iterator[BaseException]:
    """``error`` and the exceptions it was raised from (with ``context``, failing that, those it was raised
    while handling), outermost first."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (error.__context__ if context else None)


def storage_fault(error: BaseException | None) -> OSError | None:
    """The OSError with a storage errno that ``error`` is, was raised from, or was raised while handling.

    torch.save reports a failed write as a RuntimeError ("unexpected pos …") raised while handling the
    OSError that says why, so the context is searched as well as the cause.
    """
    for link in error_chain(error, context=True):
        if isinstance(link, OSError) and link.errno in STORAGE_ERRNOS:
            return link
        # tokenizers and safetensors (Rust) raise plain exceptions that end "… (os error 28)".
        found = RUST_OS_ERROR.search(str(link)) if not isinstance(link, OSError) else None
        if found and int(found[1]) in STORAGE_ERRNOS:
            return OSError(int(found[1]), os.strerror(int(found[1])))
    return None


RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def describe_storage_fault(error: OSError) -> str:
    """``no space left on device [ENOSPC]``: the cause in words, and its errno name for searching."""
    if error.errno is None:
        return str(error)
    return f"{os.strerror(error.errno).lower()} [{errno.errorcode.get(error.errno, error.errno)}]"


# Lightning's classes with an optional dependency (a tracker's logger) raise ModuleNotFoundError("Requirement
# 'wandb>=0.12.10' not met. HINT: …"), which jsonargparse folds into the text of its own error.
MISSING_REQUIREMENT = re.compile(r"Requirement '([A-Za-z0-9_.\-]+)([^']*)' not met")
# Packages that one of this project's extras installs (pyproject.toml), by extra.
EXTRA_OF_PACKAGE = {"wandb": "wandb", "mlflow": "mlflow", "peft": "peft", "onnx": "export"}


def missing_requirement(error: BaseException) -> str | None:
    """The sentence saying which package to install when ``error`` is a class's missing dependency."""
    for link in error_chain(error, context=True):
        if found := MISSING_REQUIREMENT.search(str(link)):
            package = found[1]
            extra = EXTRA_OF_PACKAGE.get(package)
            install = f"neobert_tasks[{extra}]" if extra else package + found[2]
            return (
                f"A class in this config needs the {package} package, which is not installed:"
                f" pip install '{install}'."
            )
    return None
