"""Every command the README and the documentation beside it show is run by a test, so that none of them rots.

The documents are the README, ``docs/*.md`` and ``bench/README.md`` (the detail that moved out of the
README). Their shell blocks are read and each line is sorted into what runs it:
* ``python -m neobert_tasks …`` lines run here, in order per section, in a scratch folder that links the
  repository's ``configs/`` and ``data/``, with settings that make them take seconds: the tiny model, a
  few batches (debug preset), the CPU, the shared tokenizer and the shared copy of the data the config
  names (appended after the document's own arguments, which they override only where they must).
  Commands whose presets need GPUs or several machines (``ddp``, ``ddp_multinode``, ``fsdp``,
  ``torchrun``, ``srun``) are parsed with every config they name (``--print_config``) instead of run;
* ``python -m neobert_tasks.suite …`` lines run in tests/suite/test_readme_suite.py;
* ``python -m bench.…`` lines are the benchmarks, run by hand on a quiet machine (their timings are the
  point; a timed run inside the test suite would measure nothing): here each is parsed by its script's
  own argument parser, so a renamed script or option fails;
* the install and test commands (``pip install …``, ``python -m pytest …``) are what ``.ci/run`` runs;
* ``jupyter …`` lines open or execute notebooks that tests/notebooks executes (with nbclient, as nbconvert
  does); here they must name notebooks that exist;
* the rest of a SLURM script (``#SBATCH`` lines, the requeue line) is shell around a command above.
A command in a table cell (the README's task table) runs as well, unless a shell block runs the same one.
A line that fits none of these fails `test_every_command_is_covered`, so a new command needs a test
before it can land. Python blocks run too, with a local tiny checkpoint standing in for the hub's. Commands
that push to the hub (``push_to_hub``) run against `tests.export.test_hub.fake_hub`, which uploads to a
local folder.
The README's Layout block names every part of the package and only paths that exist.
"""

from __future__ import annotations

import importlib
import json
import re
import shlex
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from transformers import AutoTokenizer

from neobert_tasks.export import hub
from neobert_tasks.export.__main__ import main as export_main
from neobert_tasks.export.folder import export_model_folder
from neobert_tasks.model import NeoBERTConfig, NeoBERTForSequenceClassification, NeoBERTModel
from tests.cli.helpers import CPU, DEBUG, TINY, build_cli
from tests.conftest import REPO_ROOT, shared_path, tiny_config_kwargs
from tests.export.test_hub import fake_hub

README = REPO_ROOT / "README.md"
# The README, then the documentation that moved out of it; sections of each run in this order.
DOCUMENTS = (README, *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "bench" / "README.md")
GPU_ONLY = ("presets/ddp.yaml", "presets/ddp_multinode.yaml", "presets/fsdp.yaml", "torchrun ", "srun ")
# Line prefixes run elsewhere (see the module docstring), or shell around a command.
RUN_ELSEWHERE = (
    "python -m neobert_tasks.suite ",
    "python -m bench.",
    "pip install ",
    "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest",
    "jupyter ",
    "#!/bin/bash",
    "#SBATCH ",
    "[ $? -eq 143 ] && scontrol requeue",
)
# Marks a `python -m neobert_tasks.export` line among the command lines of a section.
EXPORT_COMMAND = "neobert_tasks.export"
# Shared data standing in for each task config's hub dataset (GLUE configs: ../shared/data/glue/<task>).
SHARED_DATA = {
    "conll2003.yaml": ("data", "conll2003"),
    "squad.yaml": ("data", "squad"),
    "long_document.yaml": ("data", "hyperpartisan_news_detection", "byarticle"),
    "mlm.yaml": ("data", "squad"),  # SQuAD's contexts stand in for a text corpus
}


def document_name(document: Path) -> str:
    return str(document.relative_to(REPO_ROOT))


def code_blocks(language: str) -> list[tuple[str, str]]:
    """(section, code) of every fenced block of ``language`` in the documents, in order; a section is
    ``<document>: <heading>``."""
    blocks = []
    for document in DOCUMENTS:
        heading = ""
        text = document.read_text()
        for match in re.finditer(rf"^(#+ [^\n]*)$|^```{language}\n(.*?)^```", text, re.M | re.S):
            if match.group(1):
                heading = match.group(1).lstrip("# ")
            else:
                blocks.append((f"{document_name(document)}: {heading}", match.group(2)))
    return blocks


def table_commands() -> list[tuple[str, str]]:
    """(document, command) of every ``python -m …`` command written as code in a table cell."""
    commands = []
    for document in DOCUMENTS:
        for line in document.read_text().splitlines():
            if line.startswith("|"):
                commands += [
                    (document_name(document), code) for code in re.findall(r"`(python -m [^`]+)`", line)
                ]
    return commands


def shell_lines(code: str) -> list[str]:
    """Logical lines of a shell block: continuations joined, trailing comments dropped."""
    joined = code.replace("\\\n", " ")
    lines = []
    for line in joined.splitlines():
        line = line.strip()
        if not line.startswith("#"):
            line = re.sub(r"\s+#\s.*$", "", line)
        if line:
            lines.append(" ".join(line.split()))
    return lines


def cli_arguments(line: str) -> list[str] | None:
    """The arguments after ``python -m neobert_tasks`` in a line (also after ``torchrun …``/``srun``);
    for ``python -m neobert_tasks.export``, ``EXPORT_COMMAND`` then its arguments."""
    export = re.match(r"python -m neobert_tasks\.export (.*)$", line)
    if export is not None:
        return [EXPORT_COMMAND, *shlex.split(export.group(1))]
    match = re.search(r"(?:python |torchrun .*?)-m neobert_tasks (?!\.)(.*)$", line)
    if match is None or line.startswith(RUN_ELSEWHERE[:2]):
        return None
    return shlex.split(match.group(1))


def shell_commands() -> list[tuple[str, str]]:
    """(section, logical line) of every shell block of the documents, in order."""
    return [(heading, line) for heading, code in code_blocks("bash") for line in shell_lines(code)]


def cli_commands() -> list[tuple[str, list[list[str]]]]:
    """(section, the neobert_tasks argument lists of its shell blocks, in order) for each section; then the
    table cells' commands that no shell block runs, as a section of their document."""
    sections: dict[str, list[list[str]]] = {}
    lines = shell_commands()
    in_shell_blocks = [cli_arguments(line) for _, line in lines]
    table_lines = [(f"{document}: table", command) for document, command in table_commands()]
    for section, line in [*lines, *table_lines]:
        arguments = cli_arguments(line)
        if arguments is None or (section.endswith(": table") and arguments in in_shell_blocks):
            continue
        is_gpu_only = any(marker in line for marker in GPU_ONLY)
        sections.setdefault(section, []).append([*arguments, *(["--print_config"] if is_gpu_only else [])])
    return list(sections.items())


def test_every_command_is_covered():
    lines = shell_commands()
    for section, line in lines:
        covered = cli_arguments(line) is not None or line.startswith(RUN_ELSEWHERE)
        assert covered, f"{section}: no test runs `{line}`; add one to tests/test_readme.py"
    shell_lines_run_elsewhere = {line for _, line in lines if line.startswith(RUN_ELSEWHERE)}
    for document, command in table_commands():
        # A table's bench command is parsed like a shell block's; its suite command is checked where the
        # same line of a shell block is (tests/suite/test_readme_suite.py).
        covered = (
            cli_arguments(command) is not None
            or command.startswith("python -m bench.")
            or command in shell_lines_run_elsewhere
        )
        assert covered, f"{document}: the table's `{command}` is in no shell block; add it to one"


def test_ci_runs_the_readme_test_command():
    """`.ci/run` runs exactly the README's install-and-test line, so the front door's command is what CI
    proves."""
    readme_lines = [line for _, line in shell_commands() if line.startswith("pip install torch")]
    ci_lines = [line.strip() for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()]
    assert any(line in ci_lines for line in readme_lines), "the README's test command is not .ci/run's"


def test_jupyter_commands_name_stored_notebooks():
    lines = [(section, line) for section, line in shell_commands() if line.startswith("jupyter ")]
    assert lines, "the README no longer says how to open the notebooks"
    for section, line in lines:
        paths = [word for word in shlex.split(line) if word.startswith("notebooks")]
        assert paths, f"{section}: `{line}` names no notebook or notebook folder"
        assert all((REPO_ROOT / path).exists() for path in paths), f"{section}: `{line}` names a missing path"


def bench_commands() -> list[tuple[str, str]]:
    """(section, line) of every ``python -m bench.…`` line of the documents' shell blocks and tables."""
    tables = [(f"{document}: table", command) for document, command in table_commands()]
    lines = [*shell_commands(), *tables]
    return [(section, line) for section, line in lines if line.startswith("python -m bench.")]


@pytest.mark.parametrize(("section", "line"), bench_commands(), ids=lambda value: str(value)[:50])
def test_bench_command_parses(section, line):
    """A benchmark is run by hand, but its documented command line must name a script of the bench package
    and give only options that script's parser accepts."""
    module_name, *arguments = shlex.split(line.removeprefix("python -m "))
    module = importlib.import_module(module_name)
    try:
        module.parse_arguments(arguments)
    except SystemExit as exit_info:
        pytest.fail(f"{section}: `{line}` does not parse (exit status {exit_info.code})")


def test_every_bench_script_is_documented():
    documented = {shlex.split(line)[2] for _, line in bench_commands()}
    for script in sorted((REPO_ROOT / "bench").glob("*.py")):
        if "def parse_arguments(" in script.read_text():
            assert f"bench.{script.stem}" in documented, f"bench/README.md shows no command of {script.name}"


def test_layout_is_current():
    """The README's Layout block names every subpackage and module of neobert_tasks and every folder of the
    repository, and each path it starts a line with exists."""
    section = README.read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    layout = re.search(r"^```\n(.*?)^```", section, re.M | re.S)[1]
    names = {line.split()[0] for line in layout.splitlines() if line.strip()}
    package = REPO_ROOT / "neobert_tasks"
    for path in sorted(package.iterdir()):
        if path.name.startswith(("_", ".")) or not (path.suffix == ".py" or (path / "__init__.py").is_file()):
            continue
        name = f"{path.name}/" if path.is_dir() else path.name
        assert name in layout, f"README Layout does not mention neobert_tasks/{name}"
    skipped = {"runs", "build", "dist", "lightning_logs"}
    for path in sorted(REPO_ROOT.iterdir()):
        hidden = path.name.startswith((".", "_")) or path.name.endswith(".egg-info")
        if path.is_dir() and not hidden and path.name not in skipped:
            assert f"{path.name}/" in names, f"README Layout does not mention {path.name}/"
    for line in layout.splitlines():
        if line.strip():
            base = package if line.startswith(" ") else REPO_ROOT
            first = line.split()[0].rstrip(",:")
            if "/" in first or first.endswith(".py"):  # not a line that goes on with a description
                assert (base / first).exists(), f"README Layout names {first}, which does not exist"


def local_data_arguments(arguments: list[str]) -> list[str]:
    """Shared data for the configs the command names, unless the command gives its own data."""
    if "--data.init_args.data_dir" in arguments:
        return []
    configs = [Path(arguments[index + 1]) for index, value in enumerate(arguments) if value == "--config"]
    for config in configs:
        if config.parent.name == "embeddings":
            return embedding_data_arguments(config)
        if config.parent.name == "glue":
            return ["--data.init_args.data_dir", str(shared_path("data", "glue", config.stem))]
        if config.name == "squad_v2.yaml":
            return ["--data.init_args.data_dir", "squad_v2", "--data.init_args.dataset", "null"]
        if config.name in SHARED_DATA:
            extra = ["--data.init_args.dataset", "null"]
            if config.name == "mlm.yaml":
                extra += ["--data.init_args.text_column", "context"]
            return ["--data.init_args.data_dir", str(shared_path(*SHARED_DATA[config.name])), *extra]
    return []


def embedding_data_arguments(config: Path) -> list[str]:
    """The embedding config's ``../shared`` paths (relative to the repository root) made absolute, since
    the commands run elsewhere."""
    shared_path("data")
    options = yaml.safe_load((REPO_ROOT / "configs" / "embeddings" / config.name).read_text())["data"]

    def absolute(path: str) -> str:
        return str((REPO_ROOT / path).resolve())

    arguments = ["--data.init_args.data_dir", absolute(options["init_args"]["data_dir"])]
    for key in ("eval_sets", "test_sets"):
        paths = options["init_args"].get(key)
        if paths is not None:
            arguments += [f"--data.init_args.{key}", json.dumps([absolute(path) for path in paths])]
    return arguments


def quick_arguments(arguments: list[str], workspace: Path) -> list[str]:
    """The README's arguments, placeholders filled, then what makes the run take seconds on a CPU."""
    placeholders = {
        "path/to/documents": str(shared_path("data", "hyperpartisan_news_detection", "byarticle")),
        "my_corpus": str(workspace / "my_corpus"),
        "my_tokenizer": str(shared_path("tokenizers", "bert-base-uncased")),
        "my_text.txt": str(workspace / "my_text.txt"),
        "my_masked_text.txt": str(workspace / "my_masked_text.txt"),
        "my_sentences.txt": str(workspace / "my_sentences.txt"),
        "my_questions.jsonl": str(workspace / "my_questions.jsonl"),
        "my_data": str(workspace / "data" / "quickstart"),
    }
    arguments = [placeholders.get(argument, argument) for argument in arguments]
    if "--print_config" in arguments or arguments[0] == EXPORT_COMMAND:
        return arguments
    return [
        *arguments,
        *local_data_arguments(arguments),
        "--config", str(TINY), "--config", str(DEBUG), "--config", str(CPU),
        "--data.init_args.tokenizer", str(shared_path("tokenizers", "bert-base-uncased")),
        "--data.init_args.cache_dir", str(workspace / "datasets_cache"),
        "--trainer.enable_progress_bar", "false",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A scratch folder with the repository's configs/ and data/, and the README's own input files."""
    workspace = tmp_path_factory.mktemp("readme")
    for name in ("configs", "data"):
        (workspace / name).symlink_to(REPO_ROOT / name)
    (workspace / "my_text.txt").write_text(
        "George Washington visited Paris in 1789.\nAcme Corp hired Ann Lee.\n"
    )
    (workspace / "my_masked_text.txt").write_text("the [MASK] flows past the mountain.\n")
    (workspace / "my_sentences.txt").write_text("a gripping, beautifully shot film\ndull and far too long\n")
    question = {"question": "Who visited Paris?", "context": "George Washington visited Paris in 1789."}
    (workspace / "my_questions.jsonl").write_text(json.dumps(question) + "\n")
    # SQuAD v2.0's validation split, which has unanswerable questions, doubles as its training split here.
    (workspace / "squad_v2").mkdir()
    for split in ("train", "validation"):
        (workspace / "squad_v2" / f"{split}.parquet").symlink_to(
            shared_path("data", "squad_v2", "validation.parquet")
        )
    corpus = workspace / "my_corpus"
    corpus.mkdir()
    lines = [
        f"document {index} talks about the {index % 7} river and the {index % 5} mountain."
        for index in range(200)
    ]
    (corpus / "train.txt").write_text("\n".join(lines) + "\n")
    return workspace


@pytest.mark.slow  # each command is a tiny run of the command line
@pytest.mark.parametrize(("section", "commands"), cli_commands(), ids=lambda value: str(value)[:40])
def test_readme_commands_run(section, commands, workspace, monkeypatch, capsys):
    monkeypatch.chdir(workspace)
    pushes = any("push_to_hub" in argument for arguments in commands for argument in arguments)
    if pushes:
        stand_in_for_the_hub(monkeypatch, workspace / "hub" / section)
    for arguments in commands:
        if arguments[0] == EXPORT_COMMAND:
            assert export_main(arguments[1:]) == 0, f"{section}: {' '.join(arguments)}"
            continue
        try:
            build_cli(*quick_arguments(arguments, workspace))
        except SystemExit as exit_info:  # --print_config ends the command once it has printed
            assert exit_info.code in (0, None), f"{section}: {' '.join(arguments)}"
            assert "--print_config" in arguments
        capsys.readouterr()
    if pushes:
        assert list((workspace / "hub" / section).rglob("model.safetensors")), f"{section}: nothing pushed"


def stand_in_for_the_hub(monkeypatch, remote: Path) -> None:
    """The hub switched on, a token, and uploads that land in ``remote`` (`fake_hub`)."""
    monkeypatch.setattr(huggingface_hub, "is_offline_mode", lambda: False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_token")
    api = fake_hub(remote)
    monkeypatch.setattr(hub, "HfApi", lambda: api)


@pytest.mark.slow  # an ONNX export, then the blocks load and run it
def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """The Python blocks outside the GLUE suite's (tests/suite runs those), with a local tiny checkpoint and,
    for "Use your fine-tuned model", a tiny quickstart-like export (with ONNX) where the README expects it."""
    checkpoint = tmp_path / "neobert"
    NeoBERTModel(NeoBERTConfig(**tiny_config_kwargs())).save_pretrained(checkpoint)
    labels = {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}}
    classifier = NeoBERTForSequenceClassification(NeoBERTConfig(**tiny_config_kwargs(), **labels))
    tokenizer = AutoTokenizer.from_pretrained(REPO_ROOT / "data" / "tokenizer" / "bert-base-uncased")
    export_model_folder(
        classifier,
        tmp_path / "runs" / "quickstart" / "version_0" / "export",
        tokenizer=tokenizer,
        formats=["onnx"],
    )
    export_model_folder(  # docs/embeddings.md's: an embedding model with instruction prompts
        NeoBERTModel(NeoBERTConfig(**tiny_config_kwargs())),
        tmp_path / "runs" / "embeddings" / "squad_retrieval" / "version_0" / "export",
        tokenizer=tokenizer,
        normalize=True,
        prompts={"query": "query: ", "document": "passage: "},
    )
    monkeypatch.chdir(tmp_path)
    blocks = [
        (section, code) for section, code in code_blocks("python") if not section.endswith(": GLUE suite")
    ]
    assert blocks
    for section, code in blocks:
        exec(compile(code.replace('"chandar-lab/NeoBERT"', repr(str(checkpoint))), section, "exec"), {})
