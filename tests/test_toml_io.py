"""TOML reading: located syntax errors and `--set` value parsing."""

from __future__ import annotations

import pytest

from workbench.errors import ConfigError
from workbench.toml_io import dumps, parse_value, read_toml


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
