"""The GPU measurements of a session that is lent a GPU machine, prepared here and run there in one call.

    python -m bench.gpu_session prepare     # here: what the GPU machine lacks, into .gpu_carry/
    python -m bench.gpu_session run         # there (device tool, carry [".gpu_carry"]): results into $OUT

The lent machine reaches no package index and receives the working tree only (``../shared`` stays here),
and its image has torch, Lightning, transformers, torchmetrics and pyarrow but not datasets, jsonargparse
or omegaconf. ``prepare`` therefore downloads the wheels of those (the versions installed here), and
pyarrow's in case the image's is older than datasets requires, and copies the tokenizer and the SST-2 data
into ``.gpu_carry/`` (git-ignored, about 56 MB of the 64 MiB a device call takes). ``run`` installs the
wheels without an index (pyarrow only where needed), then runs, each under its own time limit so that one
overrun leaves time for the other, and writes its JSON and log into ``$OUT`` as it goes:

1. ``bench.gpu_check``: every attention backend against eager, then forward and training tokens/s, MFU
   and peak memory at 512 and 4096 tokens;
2. ``bench.fine_tuning --device cuda``: the SST-2 config with bf16 on a random base-size model, 200
   timed steps, ``fit`` (sdpa as configured, and torch_varlen) against the ``Trainer`` on the same model,
   tokens/s and MFU measured inside the runs.

The device tool's 15 minutes include the machine's start (a minute or two): the defaults keep the two steps
under 9 minutes together.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPOSITORY = Path(__file__).resolve().parents[1]
CARRY = REPOSITORY / ".gpu_carry"
SHARED = REPOSITORY.parent / "shared"
# What neobert_tasks needs beyond the GPU image (its pip list in the device tool's KINDS.md).
MISSING_PACKAGES = (
    "datasets", "dill", "multiprocess", "jsonargparse", "docstring_parser", "typeshed_client", "omegaconf",
)  # fmt: skip
# omegaconf's parser runtime is published as a source archive only: built into a wheel here.
SOURCE_ONLY = ("antlr4-python3-runtime",)
# In the image, but in a version not read there: carried too, and installed only where the image's is older
# than the carried packages require (datasets asks for a recent pyarrow). About 50 MB of the 64 MiB a call.
IF_TOO_OLD = ("pyarrow",)
IF_TOO_OLD_WHEELS = CARRY / "if_too_old"
FIT_ROUTES = ("neobert_tasks", "neobert_tasks_torch_varlen", "trainer_dynamic")


def prepare() -> None:
    """Wheels, tokenizer and SST-2 into .gpu_carry/."""
    shutil.rmtree(CARRY, ignore_errors=True)
    wheels = CARRY / "wheels"
    wheels.mkdir(parents=True)
    pinned = [f"{name}=={importlib.metadata.version(name)}" for name in (*MISSING_PACKAGES, *SOURCE_ONLY)]
    binary, source = pinned[: len(MISSING_PACKAGES)], pinned[len(MISSING_PACKAGES) :]
    # The image's Python is 3.12 (multiprocess publishes a wheel per Python version).
    target = ["--python-version", "3.12", "--platform", "manylinux2014_x86_64", "--only-binary=:all:"]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "-q", "--no-deps", *target, "-d", str(wheels), *binary], check=True)
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "-w", str(wheels), *source], check=True)
    # The newer manylinux tag too: recent pyarrow wheels carry only that one.
    newer = [*target[:2], "--platform", "manylinux_2_28_x86_64", *target[2:]]
    replacements = [f"{name}=={importlib.metadata.version(name)}" for name in IF_TOO_OLD]
    command = [*pip, "download", "-q", "--no-deps", *newer, "-d", str(IF_TOO_OLD_WHEELS), *replacements]
    subprocess.run(command, check=True)
    (IF_TOO_OLD_WHEELS / "requirements.json").write_text(json.dumps(carried_requirements(IF_TOO_OLD)))
    shutil.copytree(SHARED / "tokenizers" / "bert-base-uncased", CARRY / "tokenizer")
    shutil.copytree(SHARED / "data" / "glue" / "sst2", CARRY / "glue" / "sst2")
    size = sum(path.stat().st_size for path in CARRY.rglob("*") if path.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPOSITORY, capture_output=True, text=True).stdout
    tree = sum((REPOSITORY / name).stat().st_size for name in tracked.split("\0") if name)
    total = (size + tree) / 2**20
    print(f"{CARRY}: {size / 2**20:.1f} MiB, with the tracked files {total:.1f} MiB of the 64 MiB a device")
    print("call takes; on the GPU machine: python3 -m bench.gpu_session run")


def carried_requirements(names: tuple[str, ...]) -> dict[str, str]:
    """What the carried packages require of each of ``names``: ``{"pyarrow": ">=24.0.0"}``."""
    requirements = {}
    for package in (*MISSING_PACKAGES, *SOURCE_ONLY):
        try:
            lines = importlib.metadata.requires(package) or []
        except importlib.metadata.PackageNotFoundError:  # not installed here, so not carried either
            continue
        for line in lines:
            requirement = Requirement(line)
            if requirement.name in names and requirement.marker is None and requirement.specifier:
                specifier = requirement.specifier & requirements.get(requirement.name, "")
                requirements[requirement.name] = str(specifier)
    return requirements


def too_old(requirements: dict[str, str]) -> list[str]:
    """The names in ``requirements`` that this Python lacks, or has in a version they exclude."""
    names = []
    for name, specifier in requirements.items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or not SpecifierSet(specifier).contains(installed, prereleases=True):
            print(f"{name} {installed or 'absent'} here, {specifier} required: installing the carried one")
            names.append(name)
    return names


def step(name: str, command: list[str], seconds: int, out: Path) -> int:
    """Run one measurement under a time limit (exit 124 past it), its output shown and kept in
    ``out/<name>.log``."""
    print(f"\n== {name}: {' '.join(command)} (at most {seconds} s)", flush=True)
    limited = ["timeout", "--kill-after=10", str(seconds), *command]
    with open(out / f"{name}.log", "w") as log:
        process = subprocess.Popen(limited, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if "Warning" not in line:  # the log keeps them; the device tool returns only the last 12 kB
                print(line, end="", flush=True)
        return process.wait()


def run(arguments: argparse.Namespace) -> int:
    """Install the carried wheels, then the GPU check and the fit comparison, results into $OUT."""
    out = Path(os.environ.get("OUT", REPOSITORY / "runs" / "gpu_session"))
    out.mkdir(parents=True, exist_ok=True)
    wheels = sorted(str(path) for path in (CARRY / "wheels").glob("*.whl"))
    requirements = IF_TOO_OLD_WHEELS / "requirements.json"
    if not wheels or not requirements.exists():
        print(f"No wheels in {CARRY}: run `python -m bench.gpu_session prepare` here, and carry it.")
        return 2
    # Into a folder of their own rather than the image's environment, which stays as it is.
    site = CARRY / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site)]
    for name in too_old(json.loads(requirements.read_text())):
        wheels += sorted(str(path) for path in IF_TOO_OLD_WHEELS.glob(f"{name}-*.whl"))
    subprocess.run([*pip, *wheels], check=True)
    path = os.pathsep.join(filter(None, [str(site), str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    os.environ.update(PYTHONPATH=path, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    python = [sys.executable, "-m"]
    check = [*python, "bench.gpu_check", "--json", str(out / "gpu_check.json")]
    fit = [
        *python, "bench.fine_tuning", "--device", "cuda", "--tasks", "sst2", "--shapes", "base",
        "--precisions", "bf16", "--steps", str(arguments.fit_steps), "--warmup-steps", "20",
        "--block-steps", "20", "--routes", *FIT_ROUTES, "--data", str(CARRY / "glue"),
        "--tokenizer", str(CARRY / "tokenizer"), "--json", str(out / "fine_tuning.json"),
    ]  # fmt: skip
    codes = {
        "gpu_check": step("gpu_check", check, arguments.check_seconds, out),
        "fine_tuning": step("fine_tuning", fit, arguments.fit_seconds, out),
    }
    print("\nexit codes: " + ", ".join(f"{name} {code}" for name, code in codes.items()))
    return max(codes.values())


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or ``sys.argv``); a test parses the documented commands with it."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("action", choices=["prepare", "run"])
    parser.add_argument("--check-seconds", type=int, default=300, help="time limit of the GPU check")
    parser.add_argument("--fit-seconds", type=int, default=230, help="time limit of the fit comparison")
    parser.add_argument("--fit-steps", type=int, default=200, help="timed steps of each fit route")
    return parser.parse_args(argv)


def main() -> int:
    arguments = parse_arguments()
    if arguments.action == "prepare":
        prepare()
        return 0
    return run(arguments)


if __name__ == "__main__":
    sys.exit(main())
