"""The built-in datasets: shapes, ranges, levels, seeding, and the user-facing errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from workbench.errors import ConfigError
from workbench.plugins.data import images

TOY_SETS = ["swissroll", "moons", "eight_gaussians", "checkerboard", "circles"]


@pytest.fixture
def build(registry):
    def build(name: str, **options):
        return registry.build("dataset", name, **options)

    return build


def assert_on_grid(x: torch.Tensor, levels: int) -> None:
    """Every value is one of the `levels` evenly spaced values in [-1, 1]."""
    steps = (x.double() + 1) * (levels - 1) / 2
    assert (steps - steps.round()).abs().max() < 1e-4


def assert_valid_data(x: torch.Tensor, shape: tuple[int, ...], n: int) -> None:
    assert x.dtype == torch.float32
    assert tuple(x.shape) == (n, *shape)
    assert x.min() >= -1 and x.max() <= 1


def test_all_datasets_are_registered(registry):
    assert set(registry.names("dataset")) >= {*TOY_SETS, "digits", "shapes", "folder", "npz"}


def test_plugin_module_does_not_import_heavy_libraries():
    code = (
        "import sys, workbench.plugins.datasets; "
        "heavy = [m for m in ('torch', 'numpy', 'PIL', 'sklearn') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- 2-D toy sets -------------------------------------------------------------


@pytest.mark.parametrize("name", TOY_SETS)
def test_toy_set_shape_range_and_levels(build, name):
    dataset = build(name, n=777)
    x = dataset.load()
    assert dataset.shape == (2,) and dataset.levels is None
    assert_valid_data(x, (2,), 777)
    assert x.std(dim=0).min() > 0.1  # spread over the box, not collapsed
    labels = dataset.labels()
    assert labels is None or (labels.shape == (777,) and labels.dtype == torch.int64)


@pytest.mark.parametrize("name", TOY_SETS)
def test_toy_set_seeding(build, name):
    first = build(name, n=300, seed=1).load()
    assert torch.equal(first, build(name, n=300, seed=1).load())
    assert not torch.equal(first, build(name, n=300, seed=2).load())


@pytest.mark.parametrize("name", ["swissroll", "moons", "eight_gaussians", "circles"])
def test_heavy_noise_is_rejected_not_clamped(build, name):
    """Points pushed outside the box are drawn again: none outside, no pile-up on the edges."""
    x = build(name, n=2000, noise=0.5).load()
    assert_valid_data(x, (2,), 2000)
    assert (x.abs() > 0.999).float().mean() < 0.01  # clamping would put ~10-30% of values at +-1


def test_rejection_keeps_each_label_with_its_point():
    from workbench.plugins.data import toy2d

    generator = torch.Generator().manual_seed(0)

    def draw(m):  # uniform on [-2, 2]^2, so 3 in 4 points start outside; the label says x > 0
        points = 4 * torch.rand(m, 2, generator=generator) - 2
        return points, (points[:, 0] > 0).long()

    points, labels = toy2d.inside_box(draw, 1000, "test")
    assert points.shape == (1000, 2) and points.abs().max() <= 1
    assert torch.equal(labels, (points[:, 0] > 0).long())


def test_swissroll_without_noise_lies_on_the_spiral(build):
    x = build("swissroll", n=500, noise=0).load().double()
    t = x.norm(dim=1) / (0.8 / (4.5 * math.pi))  # the radius is t times the scale
    assert t.min() >= 1.5 * math.pi - 1e-4 and t.max() <= 4.5 * math.pi + 1e-4
    direction = x / x.norm(dim=1, keepdim=True)
    assert torch.allclose(direction, torch.stack([torch.cos(t), torch.sin(t)], dim=1), atol=1e-4)


def test_circles_radii_and_labels(build):
    dataset = build("circles", n=1000, noise=0, factor=0.25)
    radius, labels = dataset.load().norm(dim=1), dataset.labels()
    assert torch.allclose(radius[labels == 0], torch.tensor(0.8), atol=1e-5)
    assert torch.allclose(radius[labels == 1], torch.tensor(0.2), atol=1e-5)
    assert 400 < (labels == 0).sum() < 600


def test_eight_gaussians_labels_name_the_nearest_centre(build):
    dataset = build("eight_gaussians", n=2000, noise=0.05)
    x, labels = dataset.load(), dataset.labels()
    angle = torch.atan2(x[:, 1], x[:, 0])
    nearest = torch.round(angle / (2 * math.pi / 8)).long() % 8
    assert torch.equal(nearest, labels)
    assert torch.bincount(labels, minlength=8).min() > 180  # equal weights: ~250 each
    assert abs(x.norm(dim=1).mean().item() - 0.8) < 0.01


def test_moons_labels_split_the_two_half_circles(build):
    dataset = build("moons", n=2000, noise=0)
    x, labels = dataset.load().double(), dataset.labels()
    # Undo the centring and scaling, then each moon lies on its unit circle.
    raw = x / (0.8 / 1.5) + torch.tensor([0.5, 0.25], dtype=torch.float64)
    upper, lower = raw[labels == 0], raw[labels == 1]
    assert torch.allclose(upper.norm(dim=1), torch.ones(len(upper), dtype=torch.float64), atol=1e-5)
    lower_centre = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert torch.allclose((lower - lower_centre).norm(dim=1), torch.ones(len(lower), dtype=torch.float64), atol=1e-5)
    assert upper[:, 1].min() >= -1e-5 and lower[:, 1].max() <= 0.5 + 1e-5


def test_checkerboard_fills_only_the_dark_squares_evenly(build):
    x = build("checkerboard", n=8000, cells=4).load()
    square = ((x + 1) * 2).floor().long()  # 4 squares per side of width 0.5
    assert ((square[:, 0] + square[:, 1]) % 2 == 0).all()
    counts = torch.bincount(square[:, 0] * 4 + square[:, 1], minlength=16)
    assert counts.nonzero().numel() == 8 and counts[counts > 0].min() > 850  # ~1000 each


def test_toy_set_option_errors(build):
    assert build("moons", n=1).load().shape == (1, 2)
    with pytest.raises(ConfigError, match="'n'"):
        build("moons", n=0)
    with pytest.raises(ConfigError, match="'noise'"):
        build("moons", noise=2.0)
    with pytest.raises(ConfigError, match="unknown option 'noise'"):
        build("checkerboard", noise=0.1)


# --- digits ---------------------------------------------------------------------


def test_digits_are_the_sklearn_digits_on_17_levels(build):
    from sklearn.datasets import load_digits

    dataset = build("digits")
    x, labels = dataset.load(), dataset.labels()
    assert dataset.shape == (1, 8, 8) and dataset.levels == 17
    assert_valid_data(x, (1, 8, 8), 1797)
    assert_on_grid(x, 17)
    assert x.unique().numel() == 17
    # The same (label, image) pairs as scikit-learn's, in a shuffled order, with v -> v/8 - 1.
    reference = load_digits()
    ours = sorted(zip(labels.tolist(), ((x + 1) * 8).round().long().flatten(1).tolist()))
    theirs = sorted(zip(reference.target.tolist(), reference.images.reshape(-1, 64).astype(int).tolist()))
    assert ours == theirs
    assert not torch.equal(labels, torch.from_numpy(reference.target))


def test_digits_classes_and_seed(build):
    from sklearn.datasets import load_digits

    target = load_digits().target
    dataset = build("digits", classes=[3, 7])
    labels = dataset.labels()
    assert set(labels.tolist()) == {3, 7}
    assert len(dataset.load()) == len(labels) == (target == 3).sum() + (target == 7).sum()
    assert torch.equal(build("digits", seed=5).load(), build("digits", seed=5).load())
    assert not torch.equal(build("digits", seed=5).labels(), build("digits", seed=6).labels())
    with pytest.raises(ConfigError, match=r"'classes\.0'.* 9"):
        build("digits", classes=[10])
    with pytest.raises(ConfigError, match="once"):
        build("digits", classes=[1, 1])


def test_digits_without_sklearn_says_how_to_install_it(build, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn...` now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ConfigError, match=r"scikit-learn") as info:
        build("digits").load()
    assert "pip install 'workbench[digits]'" in str(info.value)


# --- shapes -----------------------------------------------------------------------


def test_shapes_shape_levels_and_seeding(build):
    dataset = build("shapes", n=40, size=16, seed=3)
    x = dataset.load()
    assert dataset.shape == (3, 16, 16) and dataset.levels == 256
    assert_valid_data(x, (3, 16, 16), 40)
    assert_on_grid(x, 256)
    assert torch.equal(x, build("shapes", n=40, size=16, seed=3).load())
    assert not torch.equal(x, build("shapes", n=40, size=16, seed=4).load())
    assert set(dataset.labels().tolist()) <= {0, 1, 2}


def test_shapes_draw_the_labelled_shape_with_its_area(build):
    """Coverage summed over the pixels is the shape's area: pi r^2, 2 r^2 or (3 sqrt 3 / 4) r^2."""
    n, size, seed = 60, 32, 0
    x = build("shapes", n=n, size=size, seed=seed).load().double()
    params = images.shape_parameters(n, size, torch.Generator().manual_seed(seed))
    colour = (params["colour"] * 255).round().double() / 255  # as quantised at full coverage
    coverage = ((x + 1) / 2) / colour[:, :, None, None]
    area = coverage.mean(dim=1).sum(dim=(1, 2))
    r = params["radius"].double()
    areas = torch.stack([math.pi * r**2, 2 * r**2, 3 * math.sqrt(3) / 4 * r**2])  # [class, image]
    expected = areas[params["label"], torch.arange(n)]
    assert ((area - expected).abs() / expected).max() < 0.05
    assert torch.equal(build("shapes", n=n, size=size, seed=seed).labels(), params["label"])
    assert (x[:, :, 0, 0] == -1).all()  # the background is black


# --- folder -------------------------------------------------------------------------

GREEN = (0, 255, 0)


def banded(size: tuple[int, int], horizontal: bool) -> Image.Image:
    """Red | green | blue bands along the long side; the centre square (and a margin) is green."""
    image = Image.new("RGB", size, GREEN)
    long_side = max(size)
    for colour, start in (((255, 0, 0), 0), ((0, 0, 255), long_side * 3 // 4)):
        end = start + long_side // 4
        box = (start, 0, end, size[1]) if horizontal else (0, start, size[0], end)
        image.paste(colour, box)
    return image


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    banded((96, 32), horizontal=True).save(tmp_path / "a_wide.png")
    banded((32, 96), horizontal=False).save(tmp_path / "b_tall.jpg", quality=95)
    Image.new("L", (20, 20), 100).save(tmp_path / "c_grey.png")
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 16, 32))  # opaque blue left half
    rgba.save(tmp_path / "d_alpha.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "sub" / "e.PNG")
    return tmp_path


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1) * 127.5).round().long()


def test_folder_resizes_crops_and_composites(build, image_folder):
    dataset = build("folder", path=str(image_folder), size=16)
    x = dataset.load()
    assert dataset.shape == (3, 16, 16) and dataset.levels == 256
    assert_valid_data(x, (3, 16, 16), 4)  # sub/ and notes.txt are not read
    assert_on_grid(x, 256)
    wide, tall, grey, alpha = to_uint8(x)
    assert (wide == torch.tensor(GREEN)[:, None, None]).all()  # the centre of the wide image
    assert ((tall - torch.tensor(GREEN)[:, None, None]).abs() <= 3).all()  # JPEG: nearly exact
    assert (grey == 100).all()
    assert (alpha[:, :, :6] == torch.tensor([0, 0, 255])[:, None, None]).all()
    assert (alpha[:, :, 10:] == 0).all()  # transparent over black


def test_folder_greyscale_and_recursive(build, image_folder):
    x = build("folder", path=str(image_folder), size=16, channels=1, recursive=True).load()
    assert_valid_data(x, (1, 16, 16), 5)
    luma_of_green = 0.587 * 255  # ITU-R 601-2: L = 0.299 R + 0.587 G + 0.114 B
    assert (to_uint8(x[0]) - luma_of_green).abs().max() <= 1
    assert (to_uint8(x[4]) - (0.299 * 10 + 0.587 * 20 + 0.114 * 30)).abs().max() <= 1  # sub/e.PNG


def test_folder_sixteen_bit_greyscale(build, tmp_path):
    Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(np.full((4, 4), 257 * 64, dtype=np.uint16)).save(tmp_path / "grey16.png")
    x = build("folder", path=str(tmp_path), size=4, channels=1).load()
    assert (to_uint8(x[0]) == 64).all() and (to_uint8(x[1]) == 255).all()


def test_folder_path_errors(build, image_folder, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build("folder", path=str(tmp_path / "nowhere")).load()
    with pytest.raises(ConfigError, match="is a file"):
        build("folder", path=str(image_folder / "a_wide.png")).load()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(ConfigError, match=r"no images .*looked for .*\.jpg .*\.png"):
        build("folder", path=str(empty)).load()


def test_folder_unreadable_file_skip_or_fail(build, image_folder):
    (image_folder / "broken.png").write_bytes(b"this is not a png")
    with pytest.warns(UserWarning, match="skipped 1 unreadable of 5 images: .*broken.png"):
        x = build("folder", path=str(image_folder), size=8, on_error="skip").load()
    assert len(x) == 4
    with pytest.raises(ConfigError, match="broken.png"):
        build("folder", path=str(image_folder), size=8, on_error="fail").load()


def test_large_folder_is_read_lazily(build, image_folder):
    in_memory = build("folder", path=str(image_folder), size=8).load()
    lazy = build("folder", path=str(image_folder), size=8, in_memory_limit=3).load()
    assert isinstance(lazy, torch.utils.data.Dataset) and not isinstance(lazy, torch.Tensor)
    assert len(lazy) == 4
    assert torch.equal(torch.stack([lazy[i] for i in range(len(lazy))]), in_memory)
    batch = next(iter(torch.utils.data.DataLoader(lazy, batch_size=4)))
    assert batch.shape == (4, 3, 8, 8) and batch.dtype == torch.float32


def test_lazy_folder_checks_headers_and_names_a_file_that_fails_later(build, image_folder):
    (image_folder / "broken.png").write_bytes(b"this is not a png")
    whole = (image_folder / "a_wide.png").read_bytes()
    (image_folder / "e_truncated.png").write_bytes(whole[: len(whole) // 2])  # a good header, half the pixels
    with pytest.warns(UserWarning, match="broken.png"):
        lazy = build("folder", path=str(image_folder), size=8, in_memory_limit=0).load()
    names = [path.name for path in lazy.files]
    assert "broken.png" not in names and "e_truncated.png" in names
    with pytest.raises(ConfigError, match="e_truncated.png"):
        lazy[names.index("e_truncated.png")]


# --- npz ------------------------------------------------------------------------------


def test_npz_single_array_continuous(build, tmp_path):
    points = torch.rand(50, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
    np.savez(tmp_path / "points.npz", points=points.numpy())
    dataset = build("npz", path=str(tmp_path / "points.npz"))
    assert dataset.shape == (2,) and dataset.levels is None
    x = dataset.load()
    assert_valid_data(x, (2,), 50)
    assert torch.equal(x, points)


def test_npz_keys(build, tmp_path):
    file = tmp_path / "two.npz"
    np.savez(file, train=np.zeros((3, 2), np.float32), test=np.ones((4, 2), np.float32))
    with pytest.raises(ConfigError, match=r"2 arrays \('train', 'test'\).*'key'"):
        build("npz", path=str(file)).load()
    assert torch.equal(build("npz", path=str(file), key="test").load(), torch.ones(4, 2))
    with pytest.raises(ConfigError, match=r"no array 'tset' \(did you mean 'test'\?\).*'train', 'test'"):
        build("npz", path=str(file), key="tset").shape


def test_npy_file(build, tmp_path):
    np.save(tmp_path / "data.npy", np.linspace(-1, 1, 12).reshape(4, 3))
    x = build("npz", path=str(tmp_path / "data.npy")).load()
    assert_valid_data(x, (3,), 4)
    assert torch.allclose(x.flatten(), torch.linspace(-1, 1, 12))
    with pytest.raises(ConfigError, match="key"):
        build("npz", path=str(tmp_path / "data.npy"), key="x").load()


def test_npz_uint8_channels_last_images(build, tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 4, 6, 3), dtype=np.uint8)
    np.savez_compressed(tmp_path / "images.npz", x=pixels)
    dataset = build("npz", path=str(tmp_path / "images.npz"))
    assert dataset.shape == (3, 4, 6) and dataset.levels == 256  # from the header alone
    x = dataset.load()
    assert_valid_data(x, (3, 4, 6), 5)
    assert_on_grid(x, 256)
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(x, expected)
    assert build("npz", path=str(tmp_path / "images.npz"), channels_last=False).load().shape == (5, 4, 6, 3)


def test_npz_uint8_greyscale_gets_a_channel_axis(build, tmp_path):
    np.save(tmp_path / "mnist_like.npy", np.full((2, 5, 5), 255, dtype=np.uint8))
    x = build("npz", path=str(tmp_path / "mnist_like.npy")).load()
    assert x.shape == (2, 1, 5, 5) and (x == 1).all()


def test_npz_minmax_and_levels(build, tmp_path):
    np.save(tmp_path / "counts.npy", np.arange(34, dtype=np.int64).reshape(2, 17) % 17)  # values 0..16
    dataset = build("npz", path=str(tmp_path / "counts.npy"), scale="minmax", discrete_levels=17)
    x = dataset.load()
    assert dataset.levels == 17
    assert torch.equal(x[0], torch.arange(17) / 8 - 1)
    np.save(tmp_path / "noisy.npy", ((np.arange(17) / 8 - 1) * (1 - 1e-6)).reshape(1, 17))
    snapped = build("npz", path=str(tmp_path / "noisy.npy"), discrete_levels=17).load()
    assert torch.equal(snapped[0], torch.arange(17) / 8 - 1)
    np.save(tmp_path / "off_grid.npy", np.array([[0.1, 0.2]]))
    with pytest.raises(ConfigError, match="grid of 17 levels"):
        build("npz", path=str(tmp_path / "off_grid.npy"), discrete_levels=17).load()


def test_npz_value_errors(build, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build("npz", path=str(tmp_path / "missing.npz")).shape
    bad = np.zeros((3, 2))
    bad[1, 0] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ConfigError, match=r"1 NaN .*index \(1, 0\)"):
        build("npz", path=str(tmp_path / "nan.npy")).load()
    np.save(tmp_path / "wide.npy", np.array([[0.0, 3.5], [-2.0, 0.0]]))
    with pytest.raises(ConfigError, match=r"from -2 to 3.5, outside \[-1, 1\]"):
        build("npz", path=str(tmp_path / "wide.npy")).load()
    x = build("npz", path=str(tmp_path / "wide.npy"), scale="minmax").load()
    assert torch.allclose(x, (torch.tensor([[0.0, 3.5], [-2.0, 0.0]]) + 2) / 5.5 * 2 - 1)
    np.save(tmp_path / "objects.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match="dtype object"):
        build("npz", path=str(tmp_path / "objects.npy")).load()


@pytest.mark.parametrize(
    "shape, message",
    [
        ((10, 0), r"has shape \(10, 0\): its examples hold no values \(axis 1 has length 0\)"),
        ((10, 0, 3), r"has shape \(10, 0, 3\): its examples hold no values \(axis 1 has length 0\)"),
        ((4, 8, 8, 0), r"has shape \(4, 8, 8, 0\): its examples hold no values \(axis 3 has length 0\)"),
        ((0, 2), r"is empty \(shape \(0, 2\)\): it has no examples"),
        ((0, 0), r"is empty \(shape \(0, 0\)\)"),
    ],
)
@pytest.mark.parametrize("dtype", [np.float64, np.uint8])
def test_npz_degenerate_shapes_are_refused_from_the_header_before_loading(build, tmp_path, shape, message, dtype):
    file = tmp_path / "degenerate.npz"
    np.savez(file, x=np.zeros(shape, dtype=dtype))
    for channels_last in ("auto", True, False):
        if channels_last is True and len(shape) != 4:
            continue
        dataset = build("npz", path=str(file), channels_last=channels_last)
        with pytest.raises(ConfigError, match=rf"dataset 'npz': the array in '.*degenerate.npz' {message}"):
            dataset.shape
        with pytest.raises(ConfigError, match=message):
            dataset.load()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("scale", ["none", "minmax"])
def test_npz_nan_and_infinite_values_are_refused_whatever_the_scale(build, tmp_path, value, scale):
    data = np.zeros((4, 2), dtype=np.float32)
    data[2, 1] = value
    np.save(tmp_path / "bad.npy", data)
    with pytest.raises(ConfigError, match=r"NaN and \d infinite values \(the first at index \(2, 1\)\)"):
        build("npz", path=str(tmp_path / "bad.npy"), scale=scale).load()


def test_npz_minmax_maps_values_near_the_float64_limits_without_overflow(build, tmp_path):
    np.save(tmp_path / "huge.npy", np.array([[-1e308, 0.0], [1e308, 5e307]]))
    x = build("npz", path=str(tmp_path / "huge.npy"), scale="minmax").load()
    assert torch.isfinite(x).all()
    assert torch.allclose(x, torch.tensor([[-1.0, 0.0], [1.0, 0.5]]))


def test_npz_with_rows_of_zero_width_through_the_cli_is_one_error(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from workbench.cli import make_app

    monkeypatch.chdir(tmp_path)
    for var in ("WB_EXPERIMENTS", "WB_SETTINGS", "WB_RUNS_DIR"):
        monkeypatch.delenv(var, raising=False)
    np.savez(tmp_path / "empty_rows.npz", x=np.zeros((10, 0)))
    (tmp_path / "experiments.toml").write_text(
        '[e]\ndataset = { name = "npz", path = "empty_rows.npz" }\n'
        'scheduler = { name = "linear", timesteps = 100 }\nbackbone = { name = "mlp", width = 16 }\n'
        "train = { steps = 2, batch_size = 2 }\n"
    )
    result = CliRunner().invoke(make_app(), ["run", "e"])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    assert "dataset 'npz': the array in 'empty_rows.npz' has shape (10, 0): its examples hold no values" in result.output


# --- classes --------------------------------------------------------------------------------


@pytest.mark.parametrize("name, options, names", [
    ("eight_gaussians", {}, ["east", "northeast", "north", "northwest", "west", "southwest", "south", "southeast"]),
    ("moons", {}, ["upper", "lower"]),
    ("circles", {}, ["outer", "inner"]),
    ("shapes", dict(n=30, size=8), ["disc", "square", "triangle"]),
])
def test_datasets_declare_their_classes_and_label_every_example_with_one(build, name, options, names):
    dataset = build(name, **options)
    assert dataset.class_names == names and dataset.num_classes == len(names)
    labels = dataset.class_labels()
    assert labels.dtype == torch.long and len(labels) == len(dataset.load())
    assert set(labels.tolist()) == set(range(len(names)))


@pytest.mark.parametrize("name", ["swissroll", "checkerboard"])
def test_sets_without_parts_have_no_classes(build, name):
    dataset = build(name, n=100)
    assert dataset.class_names is None and dataset.num_classes is None and dataset.class_labels() is None


def test_digits_classes_are_the_kept_digits_in_order(build):
    pytest.importorskip("sklearn")
    every = build("digits")
    assert every.class_names == [str(d) for d in range(10)]
    assert torch.equal(every.class_labels(), every.labels())
    some = build("digits", classes=[7, 3])
    assert some.class_names == ["3", "7"]
    assert torch.equal(some.class_labels(), (some.labels() == 7).long())  # 3 -> class 0, 7 -> class 1


def test_npz_classes_come_from_an_optional_labels_array(build, tmp_path):
    path = tmp_path / "data.npz"
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4), dtype=np.uint8)
    np.savez(path, images=images, labels=np.array(["cat", "dog", "cat", "emu", "dog", "cat"]), bad=np.zeros((6, 2)))
    dataset = build("npz", path=str(path), key="images", labels_key="labels")
    assert dataset.class_names == ["cat", "dog", "emu"]
    assert dataset.class_labels().tolist() == [0, 1, 0, 2, 1, 0]
    assert build("npz", path=str(path), key="images").class_names is None
    with pytest.raises(ConfigError, match="has no array 'label'.*"):
        build("npz", path=str(path), key="images", labels_key="label").class_names
    with pytest.raises(ConfigError, match="one integer or string per example"):
        build("npz", path=str(path), key="images", labels_key="bad").class_names


def test_folder_classes_are_its_sub_folders(build, tmp_path):
    rng = np.random.default_rng(0)
    for name, count in (("dog", 2), ("cat", 3)):
        (tmp_path / name / "deeper").mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / name / "deeper" / "x.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "loose.png")
    (tmp_path / "empty").mkdir()
    dataset = build("folder", path=str(tmp_path), size=8, class_folders=True)
    assert dataset.class_names == ["cat", "dog"]
    data = dataset.load()
    assert len(data) == 4 + 3  # the loose image is left out; sub-sub-folders count for their class
    assert dataset.class_labels().tolist() == [0, 0, 0, 0, 1, 1, 1]  # sorted paths: cat/0..2, cat/deeper/x, dog/...
    assert build("folder", path=str(tmp_path), size=8).class_names is None
