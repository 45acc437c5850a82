"""Execute a notebook of ``notebooks/`` the way the tests do: parameters injected, values read back.

Each notebook has one code cell tagged ``parameters`` (the papermill convention). The tests insert a
cell right after it that assigns their own values (a temporary output directory, ``FAST = True``), and
append a probe cell that prints a JSON object of values computed by the notebook, which the test then
checks. The kernel's working directory is a temporary folder, so nothing depends on where pytest runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

from tests.conftest import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
KERNEL_NAME = "python3"
PROBE_PREFIX = "NOTEBOOK_PROBE "
# Generous: each notebook takes one to three minutes on two busy CPU cores.
CELL_TIMEOUT_SECONDS = 600


@dataclass
class ExecutedNotebook:
    """An executed notebook, the values its probe cell printed and how long it ran."""

    notebook: nbformat.NotebookNode
    probe: dict[str, Any]
    seconds: float


def parameters_cell_index(notebook: nbformat.NotebookNode) -> int:
    """Position of the one code cell tagged ``parameters``."""
    positions = [
        index
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", [])
    ]
    assert len(positions) == 1, f"expected one cell tagged 'parameters', found {len(positions)}"
    return positions[0]


def parameters_source(parameters: Mapping[str, Any]) -> str:
    """Python assignments of ``parameters``; paths become strings (the notebooks accept both)."""
    lines = ["# Parameters injected by the tests."]
    for name, value in parameters.items():
        lines.append(f"{name} = {str(value)!r}" if isinstance(value, Path) else f"{name} = {value!r}")
    return "\n".join(lines)


def probe_values(notebook: nbformat.NotebookNode) -> dict[str, Any]:
    """The JSON object the probe cell (the last cell) printed."""
    texts = [
        output.get("text", "") for output in notebook.cells[-1].outputs if output.output_type == "stream"
    ]
    lines = [line for line in "".join(texts).splitlines() if line.startswith(PROBE_PREFIX)]
    assert lines, f"the probe cell printed no result: {notebook.cells[-1].outputs}"
    return json.loads(lines[-1].removeprefix(PROBE_PREFIX))


def printed_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the notebook's cells printed (stdout and stderr), in order."""
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )


def execute_notebook(
    name: str,
    parameters: Mapping[str, Any],
    probe: str,
    working_directory: Path,
    environment: Mapping[str, str],
) -> ExecutedNotebook:
    """Run ``notebooks/<name>`` top to bottom with ``parameters``; ``probe`` is a Python expression of
    JSON-serialisable values evaluated after the last cell. A failing cell fails with its traceback."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    injected = nbformat.v4.new_code_cell(parameters_source(parameters))
    injected.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(parameters_cell_index(notebook) + 1, injected)
    notebook.cells.append(
        nbformat.v4.new_code_cell(f"import json\nprint({PROBE_PREFIX!r} + json.dumps({probe}))")
    )
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT_SECONDS,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(working_directory)}},
    )
    start = time.perf_counter()
    client.execute(env=dict(environment))
    seconds = time.perf_counter() - start
    print(f"{name} ran in {seconds:.0f} s")
    return ExecutedNotebook(notebook, probe_values(notebook), seconds)
