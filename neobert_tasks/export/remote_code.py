"""The two files that let transformers load an export without neobert_tasks: its remote code.

transformers has no NeoBERT class. A model folder brings its own: ``configuration_neobert.py`` and
``modeling_neobert.py`` beside ``config.json``, whose ``auto_map`` names the class for each Auto class, and
``from_pretrained(folder, trust_remote_code=True)`` imports them. Those files are not a second copy of
the model kept by hand: they are generated, at every export, from this package's own model modules,
concatenated in dependency order with their imports gathered at the top. Imports between the model
modules disappear (the names are then in the same file, or come from ``configuration_neobert`` by a
relative import, which transformers copies along); the one name the model borrows from the rest of the
package, ``ConfigError``, gets a standalone definition. Anything else is refused, so a model module that
starts to need the package fails the export tests instead of shipping broken files.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

from neobert_tasks.model import AUTO_CLASSES

MODEL_PACKAGE = "neobert_tasks.model"
# Generated file → the model modules it is made of, each after those it uses.
REMOTE_CODE_FILES = {
    "configuration_neobert.py": ("configuration",),
    "modeling_neobert.py": ("rope", "padding", "attention", "pooling", "modeling", "heads"),
}
# Model module → the generated file (without ``.py``) that holds it.
FILE_OF_MODULE = {
    module: name.removesuffix(".py") for name, modules in REMOTE_CODE_FILES.items() for module in modules
}
# Model modules that stay package-only: building a model from YAML options is not the model.
PACKAGE_ONLY_MODULES = ("loading",)
# Names the model modules import from elsewhere in neobert_tasks, and what stands in for them.
STANDALONE_DEFINITIONS = {
    ("neobert_tasks.errors", "ConfigError"): (
        "class ConfigError(ValueError):\n"
        '    """A configuration or input value that this model cannot accept."""\n'
    ),
}
# Auto class → class, written into config.json's auto_map by every export.
AUTO_MAP = {"AutoConfig": "configuration_neobert.NeoBERTConfig"} | {
    auto_class.__name__: f"modeling_neobert.{model_class.__name__}"
    for auto_class, model_class in AUTO_CLASSES.items()
}


class _ModuleParts:
    """One model module split into its imports and the rest of its source (docstring as a comment)."""

    def __init__(self, name: str):
        self.name = name
        self.path = Path(inspect.getsourcefile(importlib.import_module(f"{MODEL_PACKAGE}.{name}")))
        source = self.path.read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        dropped: set[int] = set()  # 0-based line numbers of the imports and the docstring
        self.imports: list[ast.stmt] = []
        self.docstring = ast.get_docstring(tree) or ""
        for index, node in enumerate(tree.body):
            is_docstring = index == 0 and self.docstring and isinstance(node, ast.Expr)
            if is_docstring or isinstance(node, (ast.Import, ast.ImportFrom)):
                dropped.update(range(node.lineno - 1, node.end_lineno))
                if not is_docstring:
                    self.imports.append(node)
        self.body = "\n".join(line for number, line in enumerate(lines) if number not in dropped).strip()
        self.defined = _top_level_names(tree)


def _top_level_names(tree: ast.Module) -> set[str]:
    """Functions, classes and variables a module defines at its top level."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(target.id for target in node.targets if isinstance(target, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _render_imports(parts: list[_ModuleParts], this_file: str) -> tuple[list[str], list[str]]:
    """The gathered import lines of ``parts``, and the standalone definitions they need."""
    plain: set[str] = set()
    from_imports: dict[tuple[int, str], set[str]] = {}
    definitions: list[str] = []
    for module in parts:
        for node in module.imports:
            if isinstance(node, ast.Import):
                plain.update(ast.unparse(ast.Import(names=[alias])) for alias in node.names)
                continue
            source = node.module or ""
            if source == "__future__":
                continue
            names = {ast.unparse(alias) for alias in node.names}  # "name" or "name as other"
            if source.startswith(f"{MODEL_PACKAGE}."):
                home = FILE_OF_MODULE.get(source.removeprefix(f"{MODEL_PACKAGE}."))
                if home is None:
                    raise RuntimeError(f"{module.path}: imports {source}, which is not in REMOTE_CODE_FILES.")
                if home != this_file:  # same file: the names are defined above
                    from_imports.setdefault((1, home), set()).update(names)
                continue
            if source.split(".")[0] == "neobert_tasks":
                for name in sorted(names):
                    if (source, name) not in STANDALONE_DEFINITIONS:
                        raise RuntimeError(
                            f"{module.path}: imports {name} from {source}; the remote code has no "
                            "neobert_tasks to import it from (add it to STANDALONE_DEFINITIONS)."
                        )
                    definitions.append(STANDALONE_DEFINITIONS[(source, name)])
                continue
            from_imports.setdefault((node.level, source), set()).update(names)
    lines = sorted(plain)
    for (level, source), names in sorted(from_imports.items()):
        lines.append(f"from {'.' * level}{source} import {', '.join(sorted(names))}")
    return lines, sorted(set(definitions))


def remote_code_source(file_name: str) -> str:
    """The text of generated remote-code file ``file_name`` (a key of ``REMOTE_CODE_FILES``)."""
    from neobert_tasks import __version__

    parts = [_ModuleParts(name) for name in REMOTE_CODE_FILES[file_name]]
    seen: dict[str, str] = {}
    for module in parts:
        for name in module.defined:
            if name in seen:
                raise RuntimeError(f"{name} is defined in both {seen[name]} and {module.name}.py.")
            seen[name] = f"{module.name}.py"
    imports, definitions = _render_imports(parts, file_name.removesuffix(".py"))
    sources = ", ".join(f"{MODEL_PACKAGE.replace('.', '/')}/{module.name}.py" for module in parts)
    header = [
        f'"""NeoBERT for transformers\' remote code (``trust_remote_code=True``): {file_name}.',
        "",
        f"Generated by neobert_tasks {__version__} from {sources}.",
        "It depends on torch and transformers only; edit the package's modules, not this file.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        *imports,
    ]
    chunks = ["\n".join(header), *definitions]
    for module in parts:
        comment = "\n".join(f"# {line}".rstrip() for line in module.docstring.splitlines())
        chunks.append(
            f"# ---- {module.name}.py " + "-" * (90 - len(module.name)) + f"\n{comment}\n\n{module.body}"
        )
    return "\n\n\n".join(chunks) + "\n"


def write_remote_code(directory: str | Path) -> list[Path]:
    """Write the remote-code files into model folder ``directory``; returns their paths."""
    paths = [Path(directory) / file_name for file_name in REMOTE_CODE_FILES]
    for path in paths:
        path.write_text(remote_code_source(path.name))
    return paths
