"""Reading experiment files: names that become paths, `extends` between files, long chains, located lines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import make_app
from workbench.errors import ConfigError
from workbench.experiment_file import ExperimentFile, resolve_extends

REPO = Path(__file__).resolve().parents[1]

TINY = """\
[tiny]
description = "a tiny experiment"
dataset   = { name = "swissroll", n = 200 }
scheduler = { name = "linear", timesteps = 100 }
backbone  = { name = "mlp", width = 16 }
train     = { steps = 5, batch_size = 32 }
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def resolve(path: Path, name: str):
    """resolve_extends without a registry: plain deep merge, no component slots."""
    return resolve_extends(ExperimentFile.read(path), name, lambda kind, component: set(), {})


@pytest.fixture
def wb(tmp_path, monkeypatch):
    """Run `wb ARGS` in tmp_path/project (runs under tmp_path/project/runs); returns the Result."""
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    for var in ("WB_EXPERIMENTS", "WB_SETTINGS", "WB_RUNS_DIR", "WB_DISABLE_PLUGINS", "WB_STRICT_PLUGINS"):
        monkeypatch.delenv(var, raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(make_app(), list(args))

    return invoke


def assert_user_error(result, *texts: str) -> None:
    """Exit code 2, each text in the output, and no traceback."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for text in texts:
        assert text in result.output, result.output


# --- experiment names --------------------------------------------------------------

BAD_NAMES = ["../../escape", "/tmp/abs", "a/b", "a\\\\b", ".hidden", "..", "-x", "my exp", "café", "x" * 101, "", "a:b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_is_not_a_plain_folder_name_is_an_error_at_its_line(tmp_path, name):
    path = write(tmp_path / "experiments.toml", TINY + f'\n["{name}"]\nextends = "tiny"\n')
    with pytest.raises(ConfigError) as excinfo:
        ExperimentFile.read(path)
    shown = name.replace("\\\\", "\\")
    assert str(excinfo.value.message) == (
        f"{path}:8: experiment name {shown!r} is not allowed: names become folder names under the runs "
        "directory, so they may use only ASCII letters, digits, '_', '-' and '.', must start with a letter, "
        "digit or '_', and have at most 100 characters"
    )
    assert excinfo.value.hint.startswith("rename the experiment, e.g. '")


@pytest.mark.parametrize("name, suggestion", [("../../escape", "escape"), ("a/b", "a_b"), ("my exp", "my_exp")])
def test_the_hint_suggests_a_valid_name(tmp_path, name, suggestion):
    path = write(tmp_path / "experiments.toml", f'["{name}"]\nseed = 1\n')
    with pytest.raises(ConfigError) as excinfo:
        ExperimentFile.read(path)
    assert excinfo.value.hint == f"rename the experiment, e.g. '{suggestion}'"


def test_a_bad_name_in_a_dotted_or_inline_table_is_found_at_its_line(tmp_path):
    path = write(tmp_path / "experiments.toml", TINY + '\n["a/b".train]\nsteps = 1\n')
    with pytest.raises(ConfigError, match=rf"{path}:8: experiment name 'a/b'"):
        ExperimentFile.read(path)
    path = write(tmp_path / "inline.toml", '"a/b" = { seed = 1 }\n' + TINY)
    with pytest.raises(ConfigError, match=rf"{path}:1: experiment name 'a/b'"):
        ExperimentFile.read(path)


GOOD_NAMES = ["tiny", "tiny_cosine", "exp1_v", "shapes32", "A-b_c.d", "v1.5", "_private", "9lives", "x" * 100]


def test_plain_names_are_accepted_and_a_quoted_dotted_one_is_located(tmp_path):
    text = "".join(f'["{name}"]\nseed = 1\ntrain = {{ steps = 5 }}\n' for name in GOOD_NAMES)
    f = ExperimentFile.read(write(tmp_path / "experiments.toml", text))
    assert f.names == GOOD_NAMES
    assert f.locate("v1.5", []) == 16 and f.locate("v1.5", ["train", "steps"]) == 18


@pytest.mark.parametrize("path", ["experiments.toml", "workbench/starter_experiments.toml"])
def test_every_shipped_name_is_valid(path):
    assert ExperimentFile.read(REPO / path).names


def test_wb_run_with_an_escaping_name_stops_before_writing_anything(wb, tmp_path):
    write(Path("experiments.toml"), TINY.replace("[tiny]", '["../../escape"]'))
    result = wb("run", "../../escape")
    assert_user_error(result, "experiments.toml:1: experiment name '../../escape' is not allowed", "'escape'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    assert sorted(p.name for p in Path().iterdir()) == ["experiments.toml"]


@pytest.mark.parametrize("command", [("show", "tiny"), ("run", "/tmp/abs")])
def test_through_the_cli_any_bad_name_in_the_file_is_reported(wb, command):
    write(Path("experiments.toml"), TINY + '\n["/tmp/abs"]\nextends = "tiny"\n')
    assert_user_error(wb(*command), "experiments.toml:8: experiment name '/tmp/abs' is not allowed")


# --- extends across files -----------------------------------------------------------


def test_extends_paths_are_relative_to_the_file_that_holds_them(tmp_path, monkeypatch):
    write(tmp_path / "project" / "base.toml", '[root_base]\nseed = 3\ntrain = { steps = 7 }\n')
    write(tmp_path / "project" / "configs" / "mid.toml", '[mid]\nextends = "../base.toml:root_base"\ntrain = { lr = 0.1 }\n')
    top = write(tmp_path / "project" / "experiments.toml", '[top]\nextends = "configs/mid.toml:mid"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not the files' folder: paths must not depend on it
    raw, chain = resolve(top, "top")
    assert raw == {"seed": 3, "train": {"steps": 7, "lr": 0.1}}
    assert [(f.path.name, n) for f, n in chain] == [("experiments.toml", "top"), ("mid.toml", "mid"), ("base.toml", "root_base")]


@pytest.mark.parametrize(
    "reference, outside",
    [("/etc/passwd:x", "/etc/passwd"), ("../../../../../../../../etc/passwd:x", "/etc/passwd"), ("../other.toml:x", "other.toml")],
)
def test_extends_may_not_read_a_file_outside_the_experiments_folder(tmp_path, reference, outside):
    write(tmp_path / "other.toml", "[x]\nseed = 1\n")
    path = write(tmp_path / "project" / "experiments.toml", f'[a]\nseed = 0\n\n[b]\nextends = "{reference}"\n')
    with pytest.raises(ConfigError) as excinfo:
        resolve(path, "b")
    message = excinfo.value.message
    assert message.startswith(f"{path}:5: experiment 'b' extends '{reference}', but ")
    assert outside in message and f"is outside {tmp_path / 'project'}, the folder of the experiments file" in message
    assert "relative to the file that holds" in excinfo.value.hint
    assert "root:" not in str(excinfo.value)


def test_extends_through_a_symlink_that_leaves_the_folder_is_refused(tmp_path):
    write(tmp_path / "outside.toml", "[x]\nseed = 1\n")
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "link.toml").symlink_to(tmp_path / "outside.toml")
    path = write(tmp_path / "project" / "experiments.toml", '[b]\nextends = "link.toml:x"\n')
    with pytest.raises(ConfigError, match=r"is outside .*project, the folder of the experiments file"):
        resolve(path, "b")


def test_a_missing_extends_file_names_the_path_it_looked_for_and_what_it_is_relative_to(tmp_path):
    path = write(tmp_path / "configs" / "experiments.toml", '[b]\nextends = "nope.toml:x"\n')
    (tmp_path / "configs" / "dir.toml").mkdir()
    with pytest.raises(ConfigError) as excinfo:
        resolve(path, "b")
    assert excinfo.value.message == f"{path}:2: experiment 'b' extends 'nope.toml:x', but {tmp_path / 'configs' / 'nope.toml'} does not exist"
    assert excinfo.value.hint == f"the path in `extends` is relative to the folder of the file that holds it, {tmp_path / 'configs'}"
    write(path, '[b]\nextends = "dir.toml:x"\n')
    with pytest.raises(ConfigError, match="dir.toml is a folder, not a file"):
        resolve(path, "b")


@pytest.mark.parametrize(
    "content, detail",
    [
        (b"root:x:0:0:root:/root:/bin/bash\nsecret-line\n", "secret.toml:1:5: TOML syntax error: Expected '=' after a key in a key/value pair"),
        (b"password = \"hunter\xff2\"\n", "secret.toml:1: not UTF-8 text: byte 0xff at byte offset 18"),
    ],
)
def test_an_extends_file_that_is_not_toml_is_named_without_quoting_its_lines(tmp_path, content, detail):
    (tmp_path / "secret.toml").write_bytes(content)
    path = write(tmp_path / "experiments.toml", '[b]\nextends = "secret.toml:x"\n')
    with pytest.raises(ConfigError) as excinfo:
        resolve(path, "b")
    text = str(excinfo.value)
    assert text.startswith(f"{path}:2: experiment 'b' extends 'secret.toml:x', but {tmp_path / 'secret.toml'} is not a TOML experiments file: ")
    assert detail in text
    assert "root:x:0:0" not in text and "secret-line" not in text and "hunter" not in text


def test_an_extends_file_that_is_toml_but_not_experiments_says_so_with_its_line(tmp_path):
    write(tmp_path / "settings.toml", '\ntoken = "hunter2"\n')
    path = write(tmp_path / "experiments.toml", '[b]\nextends = "settings.toml:x"\n')
    with pytest.raises(ConfigError) as excinfo:
        resolve(path, "b")
    assert excinfo.value.message == (
        f"{path}:2: experiment 'b' extends 'settings.toml:x', but {tmp_path / 'settings.toml'} is not a valid "
        f"experiments file: {tmp_path / 'settings.toml'}:2: top-level key 'token' is not an experiment table"
    )
    assert "hunter2" not in str(excinfo.value)


def test_through_the_cli_extends_of_etc_passwd_does_not_print_it(wb):
    write(Path("experiments.toml"), TINY + '\n[pw]\nextends = "../../../../../../../../etc/passwd:x"\n')
    result = wb("show", "pw")
    assert_user_error(result, "experiments.toml:9: experiment 'pw' extends", "/etc/passwd is outside")
    assert "root:" not in result.output


def test_through_the_cli_extends_of_a_binary_file_is_one_line(wb):
    Path("data.toml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00secret")
    write(Path("experiments.toml"), TINY + '\n[img]\nextends = "data.toml:x"\n')
    result = wb("show", "img")
    assert_user_error(result, "experiments.toml:9: experiment 'img' extends 'data.toml:x', but", "is not a TOML experiments file")
    assert "secret" not in result.output and "PNG" not in result.output


# --- long chains and cycles --------------------------------------------------------


def chain_text(depth: int) -> str:
    return TINY.replace("[tiny]", "[e0]") + "".join(f'\n[e{i}]\nextends = "e{i - 1}"\nseed = {i}\n' for i in range(1, depth + 1))


def test_an_extends_chain_2000_deep_resolves_without_recursion_and_quickly(tmp_path):
    path = write(tmp_path / "experiments.toml", chain_text(2000))
    start = time.perf_counter()
    raw, chain = resolve(path, "e2000")
    assert time.perf_counter() - start < 5
    assert len(chain) == 2001 and raw["seed"] == 2000 and raw["backbone"] == {"name": "mlp", "width": 16}


def test_through_the_cli_a_2000_deep_chain_shows(wb):
    write(Path("experiments.toml"), chain_text(2000))
    result = wb("show", "e2000")
    assert result.exit_code == 0, result.output
    assert "[e2000]" in result.output and "seed = 2000" in result.output


def test_a_cycle_across_files_is_reported_not_followed(tmp_path):
    write(tmp_path / "other.toml", '[b]\nextends = "experiments.toml:a"\n')
    path = write(tmp_path / "experiments.toml", '[a]\nextends = "other.toml:b"\n')
    with pytest.raises(ConfigError, match=rf"{path}:2: `extends` forms a cycle: a -> b -> a"):
        resolve(path, "a")


# --- lines --------------------------------------------------------------------------


def test_lines_are_located_after_a_byte_order_mark(tmp_path):
    path = tmp_path / "experiments.toml"
    path.write_bytes(b"\xef\xbb\xbf" + TINY.encode())
    f = ExperimentFile.read(path)
    assert f.locate("tiny", []) == 1 and f.locate("tiny", ["train", "steps"]) == 6
