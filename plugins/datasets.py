"""Built-in datasets: 2-D toy sets, the scikit-learn digits, procedural shapes, a folder of images, an array file.

Every dataset yields float32 data in [-1, 1] and says how one example is
shaped (`shape`) and how many discrete values each dimension takes
(`levels`: 256 for 8-bit images, 17 for the digits, None for the continuous
toy sets). `shape` and `levels` are known without loading the data, so the
engine can build the network first. `load()` returns the whole set as one
tensor [N, *shape]; a folder larger than its `in_memory_limit` returns a
torch Dataset that reads the files lazily instead.

Randomly drawn sets (toy sets, shapes, the digits' order) take a `seed`:
the same options give bit-for-bit the same data. Nothing is downloaded.

This module is read by `wb list`, so it must not import torch, numpy, PIL
or scikit-learn at import time: the generators live in toy2d.py, images.py
and arrays.py, imported when data are asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator

from workbench import Dataset, hookimpl

if TYPE_CHECKING:
    import torch

    from workbench.plugins.data.images import ImageFiles


def _seed() -> Any:
    return Field(0, ge=0, description="seed of the torch.Generator that draws the data")


def _generator(seed: int) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(seed)


# --- 2-D toy sets -------------------------------------------------------------


class _Toy2D(Dataset):
    """Shared options and methods of the 2-D toy sets (points [n, 2], continuous)."""

    n: int = Field(10000, ge=1, description="number of points")
    seed: int = _seed()

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    def load(self) -> torch.Tensor:
        return self._draw()[0]

    def labels(self) -> torch.Tensor | None:
        return self._draw()[1]

    def _draw(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(points [n, 2], labels [n] or None), drawn from a generator seeded with `seed`."""
        raise NotImplementedError


def _noise(default: float) -> Any:
    return Field(
        default, ge=0, le=0.5, description="std of the Gaussian noise added to each point (the shape spans [-0.8, 0.8])"
    )


class SwissRoll(_Toy2D):
    """The 2-D swiss roll: the spiral (t cos t, t sin t), t in [1.5 pi, 4.5 pi]."""

    name = "swissroll"
    noise: float = _noise(0.03)

    def _draw(self):
        from workbench.plugins.data import toy2d

        return toy2d.swissroll(self.n, self.noise, _generator(self.seed))


class Moons(_Toy2D):
    """Two interleaving half circles (labels: which moon)."""

    name = "moons"
    noise: float = _noise(0.05)

    def _draw(self):
        from workbench.plugins.data import toy2d

        return toy2d.moons(self.n, self.noise, _generator(self.seed))

    @property
    def class_names(self) -> list[str]:
        return ["upper", "lower"]


class EightGaussians(_Toy2D):
    """Eight equal Gaussians on a circle (labels: which Gaussian)."""

    name = "eight_gaussians"
    noise: float = _noise(0.05)

    def _draw(self):
        from workbench.plugins.data import toy2d

        return toy2d.eight_gaussians(self.n, self.noise, _generator(self.seed))

    @property
    def class_names(self) -> list[str]:
        """Component k sits at angle 45 k degrees: east, then anticlockwise."""
        return ["east", "northeast", "north", "northwest", "west", "southwest", "south", "southeast"]


class Checkerboard(_Toy2D):
    """Uniform on the dark squares of a checkerboard."""

    name = "checkerboard"
    cells: int = Field(4, ge=2, le=64, description="squares per side of the board")

    def _draw(self):
        from workbench.plugins.data import toy2d

        return toy2d.checkerboard(self.n, self.cells, _generator(self.seed))


class Circles(_Toy2D):
    """Two concentric circles (labels: outer 0, inner 1)."""

    name = "circles"
    noise: float = _noise(0.02)
    factor: float = Field(0.5, gt=0, lt=1, description="radius of the inner circle relative to the outer")

    def _draw(self):
        from workbench.plugins.data import toy2d

        return toy2d.circles(self.n, self.noise, self.factor, _generator(self.seed))

    @property
    def class_names(self) -> list[str]:
        return ["outer", "inner"]


# --- images ---------------------------------------------------------------------


class Digits(Dataset):
    """The 8x8 handwritten digits shipped with scikit-learn: 1797 images, 17 grey levels.

    Labels: the digit. scikit-learn is an optional extra: pip install 'workbench[digits]'.
    """

    name = "digits"

    classes: list[Annotated[int, Field(ge=0, le=9)]] | None = Field(
        None, min_length=1, description="the digits to keep, e.g. [0, 1]; all ten when left out"
    )
    seed: int = Field(0, ge=0, description="seed of the shuffle of the examples' order")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None and len(set(classes)) != len(classes):
            raise ValueError("each digit may appear once")
        return classes

    @property
    def shape(self) -> tuple[int, ...]:
        return (1, 8, 8)

    @property
    def levels(self) -> int:
        return 17

    def load(self) -> torch.Tensor:
        return self._load()[0]

    def labels(self) -> torch.Tensor:
        return self._load()[1]

    @property
    def class_names(self) -> list[str]:
        """The digits kept, in increasing order: class k is the k-th of them."""
        return [str(d) for d in sorted(self.classes or range(10))]

    def class_labels(self) -> torch.Tensor:
        import torch

        kept = torch.tensor(sorted(self.classes or range(10)))
        return torch.searchsorted(kept, self.labels())

    def _load(self) -> tuple[torch.Tensor, torch.Tensor]:
        from workbench.plugins.data.images import load_digits

        return load_digits(self.classes, _generator(self.seed))


class Shapes(Dataset):
    """Procedural RGB images: one coloured disc, square or triangle on black.

    Labels: 0 disc, 1 square, 2 triangle. Drawn anti-aliased and quantised to
    8 bits, so the values lie on the 256-level grid.
    """

    name = "shapes"

    n: int = Field(10000, ge=1, description="number of images")
    size: int = Field(32, ge=8, le=1024, description="image side in pixels")
    seed: int = _seed()

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    @property
    def levels(self) -> int:
        return 256

    def load(self) -> torch.Tensor:
        from workbench.plugins.data.images import draw_shapes, from_uint8

        images, _ = draw_shapes(self.n, self.size, _generator(self.seed))
        return from_uint8(images)

    def labels(self) -> torch.Tensor:
        from workbench.plugins.data.images import shape_parameters

        return shape_parameters(self.n, self.size, _generator(self.seed))["label"]

    @property
    def class_names(self) -> list[str]:
        from workbench.plugins.data.images import SHAPE_CLASSES

        return list(SHAPE_CLASSES)


class Folder(Dataset):
    """A folder of images (PNG, JPEG, ...), resized and centre-cropped to size x size.

    Up to `in_memory_limit` images are read into one tensor; a larger folder
    is returned as a torch Dataset reading each file when asked for.
    """

    name = "folder"

    path: str = Field(..., description="the folder; a relative path starts from the current directory")
    size: int = Field(32, ge=1, le=4096, description="side of the square images, in pixels")
    channels: Literal[1, 3] = Field(3, description="1: greyscale, 3: RGB (transparency is composited over black)")
    recursive: bool = Field(False, description="also read the images in subfolders")
    on_error: Literal["skip", "fail"] = Field(
        "skip", description="a file that cannot be read: skip it (one warning lists them all) or fail naming it"
    )
    in_memory_limit: int = Field(
        50000, ge=0, description="above this many images, load() returns a torch Dataset reading files lazily"
    )
    class_folders: bool = Field(
        False,
        description="each sub-folder of `path` is a class named by it, holding that class's images at any depth "
        "(torchvision's ImageFolder layout); images directly in `path` are then left out",
    )

    @property
    def class_names(self) -> list[str] | None:
        if not self.class_folders:
            return None
        from workbench.plugins.data.images import class_folders

        return class_folders(self.path)

    def labels(self) -> torch.Tensor | None:
        return self.class_labels()

    def class_labels(self) -> torch.Tensor | None:
        if not self.class_folders:
            return None
        from workbench.plugins.data.images import folder_labels, load_folder_files

        _, files = load_folder_files(*self._load_options())
        return folder_labels(self.path, files)

    def _load_options(self) -> tuple:
        return (self.path, self.size, self.channels, self.recursive, self.on_error, self.in_memory_limit, self.class_folders)

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.channels, self.size, self.size)

    @property
    def levels(self) -> int:
        return 256

    def load(self) -> torch.Tensor | ImageFiles:
        from workbench.plugins.data.images import load_folder

        return load_folder(*self._load_options())


class Npz(Dataset):
    """A user's array file (.npz or .npy), one example per row, mapped to [-1, 1].

    The layout, scale and levels rules are in plugins/data/arrays.py.
    """

    name = "npz"

    path: str = Field(..., description="the .npz or .npy file; relative paths start from the current directory")
    key: str | None = Field(None, description="the array's name inside an .npz (may be left out if it holds one)")
    scale: Literal["auto", "none", "uint8", "minmax"] = Field(
        "auto",
        description="how values map to [-1, 1]: 'uint8' 0..255, 'minmax' [min, max], 'none' already there; "
        "'auto': 'uint8' for uint8 arrays, else 'none'",
    )
    discrete_levels: Annotated[int, Field(ge=2)] | Literal["auto", "none"] = Field(
        "auto",
        description="values per dimension of discrete data (>= 2), 'none' for continuous; "
        "'auto': 256 after a uint8 scale, else 'none'",
    )
    channels_last: bool | Literal["auto"] = Field(
        "auto", description="transpose [N, H, W, C] to [N, C, H, W]; 'auto': only uint8 4-D arrays with C = 1 or 3"
    )
    labels_key: str | None = Field(
        None,
        description="the .npz's array of class labels, one integer or string per example (classes: its distinct "
        "values, sorted); none: no classes",
    )

    @property
    def class_names(self) -> list[str] | None:
        if self.labels_key is None:
            return None
        from workbench.plugins.data.arrays import load_labels

        return load_labels(self.path, self.labels_key)[0]

    def labels(self) -> torch.Tensor | None:
        return self.class_labels()

    def class_labels(self) -> torch.Tensor | None:
        if self.labels_key is None:
            return None
        from workbench.plugins.data.arrays import load_labels

        return load_labels(self.path, self.labels_key)[1]

    @property
    def shape(self) -> tuple[int, ...]:
        from workbench.plugins.data.arrays import example_shape, read_header

        return example_shape(read_header(self.path, self.key), self.channels_last)

    @property
    def levels(self) -> int | None:
        from workbench.plugins.data.arrays import read_header, resolved_levels

        return resolved_levels(read_header(self.path, self.key), self.scale, self.discrete_levels)

    def load(self) -> torch.Tensor:
        from workbench.plugins.data.arrays import load_array

        return load_array(self.path, self.key, self.scale, self.discrete_levels, self.channels_last)


@hookimpl
def register_datasets(register):
    for cls in (SwissRoll, Moons, EightGaussians, Checkerboard, Circles, Digits, Shapes, Folder, Npz):
        register(cls)
