"""The stored notebooks: valid, without outputs, parameters first, each executed by a test, and the
README's way of running them works.

Outputs stay out of git (they hold machine paths, timings and images that change on every run), so a
notebook must be committed as cleared; the tests execute their own copies.
"""

from __future__ import annotations

import ast
import re

import nbformat
import pytest

from tests.conftest import REPO_ROOT
from tests.notebooks.execution import NOTEBOOKS, parameters_cell_index

pytestmark = pytest.mark.notebooks

EXPECTED = [
    "01_quickstart.ipynb",
    "02_glue_results.ipynb",
    "03_long_context.ipynb",
    "04_error_analysis.ipynb",
    "05_embeddings.ipynb",
]
# Parameters every notebook takes; SHARED in those that read ../shared.
COMMON_PARAMETERS = {"REPO_ROOT", "OUTPUT_DIR", "FAST", "TORCH_THREADS"}
EXECUTION_TESTS = {
    "01_quickstart.ipynb": "test_quickstart_notebook.py",
    "02_glue_results.ipynb": "test_glue_results_notebook.py",
    "03_long_context.ipynb": "test_long_context_notebook.py",
    "04_error_analysis.ipynb": "test_error_analysis_notebook.py",
    "05_embeddings.ipynb": "test_embeddings_notebook.py",
}


def read(name: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    return notebook


def test_the_notebooks_folder_holds_the_five_notebooks():
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_is_stored_without_outputs_or_execution_counts(name):
    for index, cell in enumerate(read(name).cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name} cell {index} has stored outputs"
            assert cell.execution_count is None, f"{name} cell {index} has an execution count"
        # Jupyter front ends add timing and collapse state here; only tags belong in the repository.
        assert set(cell.metadata) <= {"tags"}, f"{name} cell {index} metadata: {dict(cell.metadata)}"


@pytest.mark.parametrize("name", EXPECTED)
def test_parameters_are_plain_assignments_in_the_first_code_cell(name):
    notebook = read(name)
    position = parameters_cell_index(notebook)
    code_cells = [index for index, cell in enumerate(notebook.cells) if cell.cell_type == "code"]
    assert position == code_cells[0], "the parameters cell must be the first code cell"
    statements = ast.parse(notebook.cells[position].source).body
    # Assignments only, so that the tests' injected cell after it overrides every value.
    assert all(isinstance(statement, ast.Assign) for statement in statements)
    names = {target.id for statement in statements for target in statement.targets}
    assert names >= COMMON_PARAMETERS
    if name != "01_quickstart.ipynb":  # the quickstart needs nothing outside the repository
        assert "SHARED" in names
    assert notebook.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("name", EXPECTED)
def test_every_notebook_is_executed_by_a_test(name):
    test_file = REPO_ROOT / "tests" / "notebooks" / EXECUTION_TESTS[name]
    assert f'"{name}"' in test_file.read_text()


def readme_commands() -> list[str]:
    """The commands of the README's ``## Notebooks`` section (its bash blocks)."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = re.search(r"^## Notebooks\n(.*?)(?=^## )", readme, re.S | re.M)
    assert section, "README.md has no ## Notebooks section"
    blocks = re.findall(r"```bash\n(.*?)```", section.group(1), re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_readme_lists_every_notebook():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("## Notebooks") :]
    for name in EXPECTED:
        assert f"notebooks/{name}" in section


class CollectedTests:
    """A pytest plugin that keeps the ids of the tests a session selected."""

    def __init__(self):
        self.ids: list[str] = []

    def pytest_collection_finish(self, session) -> None:
        self.ids = [item.nodeid for item in session.items]


def test_readme_command_selects_every_notebook_test(monkeypatch):
    # Executing the command here would run every notebook a second time (the tests of this folder
    # already do, minutes each); collecting what it selects checks it with the same arguments. The
    # collection runs in this process (`pytest.main`, as pytest's own pytester does): the test modules
    # are imported already, where a new interpreter would spend seconds importing them again.
    [command] = [line for line in readme_commands() if "python -m pytest" in line]
    environment_part, python_part = command.split("python ", 1)
    for item in environment_part.split():
        monkeypatch.setenv(*item.split("=", 1))
    module_flag, module, *arguments = python_part.split()
    assert (module_flag, module) == ("-m", "pytest"), command
    monkeypatch.chdir(REPO_ROOT)
    collected = CollectedTests()
    status = pytest.main([*arguments, "--collect-only", "-p", "no:cacheprovider"], plugins=[collected])
    assert status == pytest.ExitCode.OK
    for name, test_file in EXECUTION_TESTS.items():
        assert any(test_id.startswith(f"tests/notebooks/{test_file}::") for test_id in collected.ids), (
            f"{name}'s test is not selected"
        )


def test_stored_figures_are_ones_the_notebooks_draw():
    """notebooks/figures holds `<notebook>__<figure>.png` copies of what each notebook saves as
    `<figure>.png`, so a figure renamed or dropped from a notebook cannot leave a stale picture behind."""
    figures = sorted((REPO_ROOT / "notebooks" / "figures").glob("*.png"))
    assert figures, "notebooks/figures has no figure"
    for figure in figures:
        notebook, _, name = figure.stem.partition("__")
        source = (REPO_ROOT / "notebooks" / f"{notebook}.ipynb").read_text()
        assert f"{name}.png" in source, f"{figure.name}: {notebook}.ipynb saves no {name}.png"
