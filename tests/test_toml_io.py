"""TOML reading: located syntax errors, encodings, and `--set` value parsing."""

from __future__ import annotations

import pytest

from workbench.errors import ConfigError
from workbench.toml_io import TomlFileError, dumps, parse_value, read_toml


def test_syntax_error_names_file_line_column_and_shows_the_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[exp1]\nseed = 0\ntrain = { steps = 10, }\n')
    with pytest.raises(ConfigError) as excinfo:
        read_toml(path)
    message = str(excinfo.value)
    assert f"{path}:3:" in message
    assert "3 | train = { steps = 10, }" in message
    assert "^" in message.splitlines()[-1]


@pytest.mark.parametrize(
    "text, value",
    [
        ("200", 200),
        ("1e-3", 1e-3),
        ("true", True),
        ("[16, 8]", [16, 8]),
        ('"my dir"', "my dir"),
        ("cosine", "cosine"),
        ("other:linear", "other:linear"),
        ("{ name = 'mlp' }", {"name": "mlp"}),
    ],
)
def test_parse_value_reads_toml_and_bare_words(text, value):
    assert parse_value(text) == value


@pytest.mark.parametrize("text", ["[1, 2", "1 2", "a b", ""])
def test_parse_value_rejects_what_is_neither(text):
    with pytest.raises(ValueError, match="is not a TOML value"):
        parse_value(text)


def test_dumps_leaves_out_none_and_round_trips(tmp_path):
    data = {"exp": {"a": 1, "b": None, "c": {"d": [1, 2]}, "p": tmp_path}}
    path = tmp_path / "out.toml"
    path.write_text(dumps(data))
    assert read_toml(path) == {"exp": {"a": 1, "c": {"d": [1, 2]}, "p": str(tmp_path)}}


# --- the file's bytes: encoding, byte-order mark, nesting ---------------------------


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[exp1]\nseed = 1\n")
    assert read_toml(path) == {"exp1": {"seed": 1}}


def test_a_syntax_error_after_a_byte_order_mark_points_at_the_columns_the_user_sees(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf[exp1]\nseed = = 1\n")
    with pytest.raises(ConfigError, match=rf"{path}:2:8: TOML syntax error"):
        read_toml(path)


def test_bytes_that_are_not_utf8_name_the_file_line_and_offset(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('[exp1]\ndescription = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(TomlFileError) as excinfo:
        read_toml(path)
    assert str(excinfo.value).startswith(f"{path}:2: not UTF-8 text: byte 0xe9 at byte offset 25")
    assert "UTF-8" in excinfo.value.hint
    assert excinfo.value.brief == excinfo.value.message


def test_a_utf16_file_is_named_as_such(tmp_path):
    path = tmp_path / "utf16.toml"
    path.write_text("[exp1]\nseed = 1\n", encoding="utf-16")
    with pytest.raises(ConfigError, match=rf"{path}:1: the file is UTF-16"):
        read_toml(path)


def test_values_nested_too_deeply_are_an_error_not_a_recursion_error(tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("[exp1]\nseed = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match=rf"{path}: values nested too deeply"):
        read_toml(path)


def test_an_unreadable_path_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=rf"cannot read {tmp_path}: Is a directory"):
        read_toml(tmp_path)


def test_the_brief_form_of_a_syntax_error_does_not_quote_the_file(tmp_path):
    path = tmp_path / "secret.toml"
    path.write_text("root:x:0:0:root:/root:/bin/bash\n")
    with pytest.raises(TomlFileError) as excinfo:
        read_toml(path)
    assert "root:x:0:0" in excinfo.value.message  # the user's own file: shown, to fix it
    assert excinfo.value.brief == f"{path}:1:5: TOML syntax error: Expected '=' after a key in a key/value pair"


def test_a_settings_file_that_is_not_utf8_is_a_config_error(tmp_path, monkeypatch):
    from workbench.settings import load_settings

    path = tmp_path / "workbench.toml"
    path.write_bytes(b'runs_dir = "r\xffuns"\n')
    monkeypatch.setenv("WB_SETTINGS", str(path))
    with pytest.raises(ConfigError, match=rf"{path}:1: not UTF-8 text: byte 0xff at byte offset 13"):
        load_settings()


@pytest.mark.parametrize(
    "content, message",
    [
        (b'[tiny]\ndescription = "caf\xe9"\n', "experiments.toml:2: not UTF-8 text: byte 0xe9 at byte offset 25"),
        (b"\xef\xbb\xbf[tiny]\nseed = = 1\n", "experiments.toml:2:8: TOML syntax error"),
    ],
)
def test_through_the_cli_a_bad_file_is_one_message_and_exit_code_2(tmp_path, monkeypatch, content, message):
    from typer.testing import CliRunner

    from workbench.cli import make_app

    monkeypatch.chdir(tmp_path)
    for var in ("WB_EXPERIMENTS", "WB_SETTINGS", "WB_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "experiments.toml").write_bytes(content)
    result = CliRunner().invoke(make_app(), ["show", "tiny"])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)


def test_parse_options_reads_repeated_flags_and_names_the_bad_one():
    from workbench.errors import ConfigError
    from workbench.toml_io import parse_options

    assert parse_options(["steps=20", "eta=1.0", "spacing=logsnr"], "--option", "eta=1.0") == {
        "steps": 20, "eta": 1.0, "spacing": "logsnr"}
    with pytest.raises(ConfigError, match=r"--option 'eta': expected KEY=VALUE") as excinfo:
        parse_options(["steps=20", "eta"], "--option", "eta=1.0")
    assert excinfo.value.hint == "write --option option=value, e.g. --option eta=1.0"
