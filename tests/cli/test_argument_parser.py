"""`NeoBERTArgumentParser` on its own: jsonargparse's reports, as recorded, and the sentences made of them.

jsonargparse words its errors and attaches little else to them, so `neobert_tasks.parse_errors` reads some
of that wording. The mistakes of `tests.cli.jsonargparse_recording.CASES` are made on a small parser shaped
like the CLI's; the installed jsonargparse must report each exactly as ``jsonargparse_messages.json``
recorded it (else an upgrade changed its wording or its exceptions: the test names the case), and each
recorded report must read as its sentence. The config-file checks and negative numbers, which happen before
jsonargparse reads the command line, are tested here too.
"""

from __future__ import annotations

import json

import pytest

from neobert_tasks.command_line import check_config_files, join_negative_values, where
from neobert_tasks.errors import ConfigError, MissingPathError
from neobert_tasks.parse_errors import WORDING, explain, read_failure
from tests.cli.jsonargparse_recording import (
    CASES,
    MODEL,
    RECORDING,
    TASK,
    arguments_of,
    build_parser,
    rebuild,
    report,
)

RECORDED = json.loads(RECORDING.read_text())


@pytest.fixture(scope="module")
def parsers():
    return build_parser()


def test_every_case_is_recorded():
    assert sorted(RECORDED["reports"]) == sorted(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_jsonargparse_reports_each_mistake_as_recorded(name, parsers, tmp_path):
    parser, subparsers = parsers
    live, sentence = report(name, tmp_path, parser, subparsers)
    assert live == RECORDED["reports"][name], (
        f"jsonargparse reports case {name!r} differently from its recording (jsonargparse"
        f" {RECORDED['jsonargparse']}): check that neobert_tasks.parse_errors.WORDING still reads it, then"
        " record again with `python -m tests.cli.jsonargparse_recording`."
    )
    assert sentence == CASES[name][2]


@pytest.mark.parametrize("name", list(CASES))
def test_each_recorded_report_reads_as_one_sentence(name, parsers, tmp_path):
    parser, subparsers = parsers
    recorded = RECORDED["reports"][name]
    message = recorded["message"].replace("{tmp}", str(tmp_path))
    reporter = subparsers.get(recorded["parser"], parser)
    error = rebuild(recorded, tmp_path, subparsers)
    explained = explain(message, error, reporter, arguments_of(name, tmp_path))
    assert str(explained).replace(str(tmp_path), "{tmp}") == CASES[name][2]


def test_the_chain_names_the_key_the_class_and_the_refused_init_argument(tmp_path, parsers):
    recorded = RECORDED["reports"]["init_argument_of_the_wrong_type"]
    failure = read_failure(recorded["message"], rebuild(recorded, tmp_path, parsers[1]))
    assert (failure.key, failure.class_path, failure.inner_key) == ("model", TASK, "learning_rate")
    assert isinstance(failure.cause, ValueError)


def test_every_phrase_read_is_used_by_a_recorded_report():
    """A phrase no recorded report contains is either dead or untested."""
    texts = [
        text
        for recorded in RECORDED["reports"].values()
        for text in [recorded["message"], *(link["text"] for link in recorded["chain"])]
    ]
    # The Literal phrase reads a type named by an "Expected a ..." phrase.
    texts += [match["type"] for text in texts for match in WORDING["expected"].finditer(text)]
    unused = [name for name, phrase in WORDING.items() if not any(phrase.search(text) for text in texts)]
    assert unused == []


def test_a_command_line_value_that_is_not_yaml(parsers):
    parser, _ = parsers
    with pytest.raises(ConfigError) as error:
        parser.parse_args(["fit", *MODEL, "--trainer", "{max_epochs: [1"])
    assert str(error.value) == (
        "Invalid value for 'trainer' on the command line: not valid YAML (did not find expected ',' or ']'"
        " at line 2, column 1 (while parsing a flow sequence at line 1))."
    )


# ----------------------------------------------------------------------------------------------------------
# Before jsonargparse: config files and negative numbers.


def test_config_file_that_does_not_exist(tmp_path):
    missing = tmp_path / "no_such.yaml"
    with pytest.raises(MissingPathError, match=rf"^Config file '{missing}' does not exist\.$"):
        check_config_files(["fit", "--config", str(missing)])


def test_a_missing_repository_config_says_where_the_configs_come_from(tmp_path, monkeypatch):
    """Run outside a clone (a wheel install), configs/… names a folder that is not there."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingPathError, match=r"comes with the source repository, not with an installed"):
        check_config_files(["fit", "--config", "configs/glue/sst2.yaml"])
    (tmp_path / "configs").mkdir()  # in a clone, a misspelt name is only that
    with pytest.raises(MissingPathError, match=r"^Config file 'configs/glue/sst2\.yaml' does not exist\.$"):
        check_config_files(["fit", "--config", "configs/glue/sst2.yaml"])


def test_config_folder(tmp_path):
    with pytest.raises(ConfigError, match=rf"^Config file '{tmp_path}' is a directory; give a YAML file\.$"):
        check_config_files([f"--config={tmp_path}"])


def test_config_file_that_is_not_yaml(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("trainer:\n  max_epochs: 3\n   devices: 1\n")
    with pytest.raises(ConfigError) as error:
        check_config_files(["-c", str(config)])
    assert str(error.value) == (
        f"Config file '{config}' is not valid YAML: mapping values are not allowed here at line 3, column 11."
    )


@pytest.mark.parametrize(
    ("text", "kind"), [("- 1\n- 2\n", "a list"), ("", "an empty file"), ("3\n", "an int")]
)
def test_config_file_that_is_not_a_mapping(tmp_path, text, kind):
    config = tmp_path / "mine.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as error:
        check_config_files(["--config", str(config)])
    assert str(error.value) == (
        f"Config file '{config}' must hold keys with values (a YAML mapping such as 'trainer: {{max_epochs:"
        f" 3}}'), not {kind}."
    )


def test_config_given_as_text():
    check_config_files(["--config", "{trainer: {max_epochs: 3}}"])  # a mapping: jsonargparse reads it
    with pytest.raises(ConfigError, match=r"^A --config value must be a YAML mapping of keys to values"):
        check_config_files(["--config", "[1, 2]"])


def test_the_parser_checks_config_files_except_for_help(parsers, tmp_path, capsys):
    parser, _ = parsers
    missing = str(tmp_path / "no_such.yaml")
    with pytest.raises(MissingPathError):
        parser.parse_args(["fit", "--config", missing])
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["fit", "--help", "--config", missing])
    assert exit_info.value.code == 0 and "--trainer.max_epochs" in capsys.readouterr().out


def test_negative_numbers_are_joined_to_their_option():
    arguments = ["fit", "--a", "-1e-3", "--b=-2", "--c", "-.5E+1", "-c", "-1", "--help", "-1", "--d", "-e3"]
    assert join_negative_values(arguments) == [
        "fit", "--a=-1e-3", "--b=-2", "--c=-.5E+1", "-c", "-1", "--help", "-1", "--d", "-e3",
    ]  # fmt: skip


def test_a_negative_learning_rate_reaches_the_model(parsers):
    parser, _ = parsers
    config = parser.parse_args(["fit", *MODEL, "--model.init_args.learning_rate", "-1e-3"])
    assert config.fit.model.init_args.learning_rate == -1e-3


@pytest.mark.parametrize(
    ("key", "arguments", "expected"),
    [
        ("model.init_args.learning_rate", ["--model.learning_rate", "1"], " on the command line"),
        ("model.class_path", ["--model", "x.Y"], " on the command line"),
        ("trainer.callbacks", ["--trainer.callbacks+=x.Y"], " on the command line"),
        ("trainer.max_epochs", ["--trainer.max_epochs=3"], " on the command line"),
        ("trainer.max_epochs", ["--trainer.max_steps", "3"], ""),
    ],
)
def test_where_a_key_is_typed(key, arguments, expected):
    assert where(key, arguments) == expected


def test_where_the_last_config_file_setting_a_key_is(tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text("trainer:\n  max_epochs: 3\n")
    second.write_text("trainer:\n  callbacks:\n    - init_args:\n        patience: 2\n")
    arguments = ["--config", str(first), "--config", str(second)]
    assert where("trainer.max_epochs", arguments) == f" in config file '{first}'"
    assert where("trainer.callbacks.init_args.patience", arguments) == f" in config file '{second}'"
