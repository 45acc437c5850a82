"""Fixtures of the notebook tests: the ``notebooks`` marker and a Jupyter kernel that runs this Python.

The kernel is declared in a temporary Jupyter data folder with ``sys.executable`` as its interpreter, so
the notebooks run under the Python that runs the tests, whatever kernels the machine has installed (a
``python3`` kernelspec elsewhere may name another ``python`` on the PATH).
"""

from __future__ import annotations

import os

import pytest
from ipykernel.kernelspec import write_kernel_spec

from tests.conftest import REPO_ROOT
from tests.notebooks.execution import KERNEL_NAME


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "notebooks: executes the notebooks of notebooks/ (select with -m notebooks)"
    )


def _prepend(path: str, variable: str) -> str:
    return os.pathsep.join(filter(None, [path, os.environ.get(variable)]))


@pytest.fixture(scope="session")
def kernel_environment(tmp_path_factory):
    """Environment of the notebook kernels: offline, this interpreter, this checkout importable.

    ``JUPYTER_PATH`` is set in this process too, where nbclient looks the kernel up. ``PYTHONPATH``
    carries the repository root because the kernels run in a temporary directory, where the package
    would otherwise be importable only through an installation (which may point elsewhere).
    """
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    write_kernel_spec(jupyter_path / "kernels" / KERNEL_NAME)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", _prepend(str(jupyter_path), "JUPYTER_PATH"))
        yield {
            **os.environ,
            "PYTHONPATH": _prepend(str(REPO_ROOT), "PYTHONPATH"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        }
