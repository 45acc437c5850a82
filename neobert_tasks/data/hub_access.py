"""Reaching the Hugging Face hub: one quick probe, then cached copies only, instead of minutes of retries.

Without a network, `datasets.load_dataset` and `AutoTokenizer.from_pretrained` retry each request with
backoff (about 30 s and a dozen log lines) before failing. `hub_unreachable` connects once to the hub's
host with a short timeout; when that fails, `offline_hub` runs the load in the libraries' offline mode,
which finds a cached copy or fails at once, and the caller reports the way out in one sentence.

The libraries read `HF_HUB_OFFLINE` once, at import, into module constants; switching offline mode for
one call means setting those constants. That is not a public API: it is kept here, and
tests/data/test_hub_access.py fails when a library upgrade renames them.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from unittest import mock
from urllib.parse import urlparse

import datasets
import huggingface_hub.constants

PROBE_TIMEOUT_S = 3.0
# (module, attribute) pairs holding the offline switch that the hub client and datasets consult per call.
OFFLINE_SWITCHES = ((huggingface_hub.constants, "HF_HUB_OFFLINE"), (datasets.config, "HF_HUB_OFFLINE"))
# The way out named in every "hub not reachable" error.
LOCAL_DATA_HINT = "pass a local folder of split files with --data.init_args.data_dir (README: Your own data)"


def hub_unreachable() -> bool:
    """Whether the hub's host cannot be reached now: offline mode (HF_HUB_OFFLINE=1 or HF_DATASETS_OFFLINE=1),
    no DNS, or no connection in 3 s."""
    if huggingface_hub.constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE:
        return True
    endpoint = urlparse(huggingface_hub.constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def offline_hub(offline: bool = True) -> Iterator[None]:
    """Within the block, the hub client and datasets use cached files only (when `offline`)."""
    with contextlib.ExitStack() as stack:
        if offline:
            for module, name in OFFLINE_SWITCHES:
                stack.enter_context(mock.patch.object(module, name, True))
        yield
