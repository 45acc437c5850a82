"""Errors a user can cause through a config, a command line or a data file.

The command line prints their message, one sentence naming the file, key, column or value, and exits
with status 2 instead of showing a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserInputError(Exception):
    """Base of every error whose message alone tells the user what to fix."""


class ConfigError(UserInputError, ValueError):
    """A configuration value is invalid (unknown name, inconsistent sizes, value out of range)."""


class MissingPathError(UserInputError, FileNotFoundError):
    """A file or directory named in the configuration does not exist."""
