"""Every command of the ``## GLUE suite`` code block of docs/glue.md (moved there from the README), run as
written plus test arguments.

How each command runs (the block is parsed here, so a command added there is run too):
* ``glue … --dry_run``: exactly as written, with only ``--output_dir`` moved under the test's folder;
  the number of runs it prints is checked against its tasks × seeds.
* other ``glue`` commands: with `with_quick_args` inserted before any ``--`` (tiny, debug and CPU
  presets after the command's own, the shared data and tokenizer, a few rows) and ``--tasks wnli
  --seeds 0`` appended (later options win), so each trains one tiny WNLI run instead of the whole suite;
  a ``--grid`` is replaced by a one-point grid (test_suite_runs.py runs a two-point one). The first
  such command keeps the default launcher, one subprocess per run, which other tests replace by
  in-process runs.
* ``table``: on the output folder of the first ``glue`` command.
The section's Python snippet then runs on that folder too (its ``runs/suite/glue`` replaced).
"""

from __future__ import annotations

import re
import shlex

import pytest

from neobert_tasks.data.glue import GLUE_TASKS
from tests.conftest import REPO_ROOT
from tests.suite.helpers import run_suite, with_quick_args

pytestmark = pytest.mark.slow  # the suite's commands train for real, one of them in a subprocess

PREFIX = ["python", "-m", "neobert_tasks.suite"]
GLUE_DOCS = REPO_ROOT / "docs" / "glue.md"


def readme_block(language: str) -> str:
    """The first ``language`` code block of the ``## GLUE suite`` section of docs/glue.md."""
    readme = GLUE_DOCS.read_text()
    section = readme.split("\n## GLUE suite\n", 1)[1].split("\n## ", 1)[0]
    return re.search(rf"```{language}\n(.*?)```", section, re.DOTALL)[1]


def readme_suite_commands() -> list[list[str]]:
    """The suite commands of the ``## GLUE suite`` section, as argument lists without PREFIX."""
    block = readme_block("bash").replace("\\\n", " ")
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    assert commands and all(command[:3] == PREFIX for command in commands), commands
    return [command[3:] for command in commands]


def option_values(command: list[str], option: str) -> list[str]:
    """The values given after ``option`` in ``command``, up to the next option."""
    values = []
    for argument in command[command.index(option) + 1 :]:
        if argument.startswith("--"):
            break
        values.append(argument)
    return values


def planned_runs(command: list[str]) -> int:
    """Tasks × seeds of a ``glue`` command without a grid (``all`` is the nine tasks, MNLI among them)."""
    tasks = option_values(command, "--tasks")
    return (len(GLUE_TASKS) if tasks == ["all"] else len(tasks)) * len(option_values(command, "--seeds"))


def test_readme_suite_commands_run(tmp_path):
    commands = readme_suite_commands()
    assert {command[0] for command in commands} == {"glue", "table"}
    first_output, launcher = None, "subprocess"
    one_point_grid = tmp_path / "one_point_grid.yaml"
    one_point_grid.write_text("parameters:\n  model.init_args.learning_rate: [1.0e-4]\n")
    for number, command in enumerate(commands):
        output_dir = tmp_path / f"command_{number}"
        if command[0] == "table":
            status, output = run_suite([*command, "--output_dir", first_output])
            assert status == 0 and "| WNLI | accuracy |" in output, output
            continue
        if "--dry_run" in command:
            status, output = run_suite([*command, "--output_dir", output_dir])
            assert status == 0
            assert output.count(": would train: python -m neobert_tasks fit") == planned_runs(command)
            continue
        test_options = ["--output_dir", str(output_dir), "--tasks", "wnli", "--seeds", "0"]
        test_options += ["--grid", str(one_point_grid)] if "--grid" in command else []
        cut = command.index("--") if "--" in command else len(command)
        argv = with_quick_args([*command[:cut], *test_options, *command[cut:]], tmp_path, launcher)
        status, output = run_suite(argv)
        assert status == 0 and " 0 failed." in output, output[-3000:]
        assert len(list(output_dir.glob("wnli/**/seed_0/metrics.json"))) == 1
        first_output, launcher = first_output or output_dir, "in_process"
    snippet = readme_block("python").replace('"runs/suite/glue"', repr(str(first_output)))
    namespace: dict = {}
    exec(snippet, namespace)
    assert [row["task"] for row in namespace["rows"]] == ["wnli"]  # WNLI is not in the GLUE average
