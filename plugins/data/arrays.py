"""A user's array file (.npz or .npy) as training data in [-1, 1].

The file holds one array with one example per row, [N, ...]. How it becomes
data, in order:

1. Layout (`channels_last`). "auto" treats a uint8 array as 8-bit images: a
   4-D one whose last axis is 1 or 3 is NHWC and becomes NCHW, a 3-D one is
   [N, H, W] greyscale and gets a channel axis, [N, 1, H, W]. Arrays of any
   other dtype are left as they are (a float [N, H, W, 3] array could as well
   be data whose last axis is not channels); true forces NHWC -> NCHW, false
   leaves every array alone.
2. Scale (`scale`). "uint8" maps integers 0..255 to [-1, 1] as v/127.5 - 1;
   "none" expects values already in [-1, 1] and says so when they are not;
   "minmax" maps the array's [min, max] linearly onto [-1, 1] (one map for
   all dimensions, so shapes keep their proportions); "auto" is "uint8" for a
   uint8 array and "none" otherwise.
3. Levels (`discrete_levels`): "auto" is 256 after a "uint8" scale and
   continuous otherwise; "none" is continuous; an integer L says the data are
   discrete, and they must then lie on the grid of L values -1, -1 + 2/(L-1),
   ..., 1 (they are snapped onto it exactly, which removes float round-off).

Only the array's header is read to answer `shape` and `levels`, so the
engine learns them without loading the data; the header is also enough to
refuse an array with no rows or with examples of no values (an axis of
length 0), before anything is built. NaN and infinite values are refused
when the data are loaded. Pickled (object) arrays are
never loaded: a data file must not be able to run code.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from workbench.errors import ConfigError, did_you_mean

WHERE = "dataset 'npz'"


@dataclass(frozen=True)
class ArrayHeader:
    """Where an array lives and what its header says."""

    path: Path
    key: str | None  # the array's name inside an .npz; None for an .npy
    shape: tuple[int, ...]
    dtype: np.dtype


def read_header(path: str, key: str | None) -> ArrayHeader:
    """Find the array (checking the path and the key) and read its shape and dtype, not its data."""
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder, not a file" if file.is_dir() else "does not exist"
        raise ConfigError(
            f"{WHERE}: option 'path': '{path}' {what}",
            hint=f"give an .npz or .npy file; relative paths start from {Path.cwd()}",
        )
    if file.suffix.lower() == ".npy":
        if key is not None:
            raise ConfigError(
                f"{WHERE}: option 'key' = '{key}' names an array inside an .npz, "
                f"but '{path}' is an .npy file holding one array; leave 'key' out"
            )
        with open(file, "rb") as f:
            shape, dtype = _header_of(f, path)
        return ArrayHeader(file, None, shape, dtype)
    if file.suffix.lower() != ".npz":
        raise ConfigError(f"{WHERE}: option 'path': '{path}' is neither an .npz nor an .npy file")
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile:
        raise ConfigError(f"{WHERE}: '{path}' is not a valid .npz file (np.savez writes them)") from None
    with archive:
        keys = [name.removesuffix(".npy") for name in archive.namelist()]
        key = _choose_key(keys, key, path)
        with archive.open(key + ".npy") as f:
            shape, dtype = _header_of(f, path)
    return ArrayHeader(file, key, shape, dtype)


def _choose_key(keys: list[str], key: str | None, path: str) -> str:
    listing = ", ".join(f"'{k}'" for k in keys) or "(none)"
    if key is None:
        if len(keys) == 1:
            return keys[0]
        raise ConfigError(
            f"{WHERE}: '{path}' holds {len(keys)} arrays ({listing}); option 'key' must say which to use",
            hint=f"e.g. key = '{keys[0]}'" if keys else None,
        )
    if key not in keys:
        raise ConfigError(
            f"{WHERE}: option 'key': '{path}' has no array '{key}'{did_you_mean(key, keys)}; its arrays are: {listing}"
        )
    return key


def _header_of(f: BinaryIO, path: str) -> tuple[tuple[int, ...], np.dtype]:
    try:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    except ValueError as exc:
        raise ConfigError(f"{WHERE}: cannot read the array header in '{path}': {exc}") from None
    return tuple(shape), dtype


def example_shape(header: ArrayHeader, channels_last: bool | str) -> tuple[int, ...]:
    """The shape of one example after the layout step."""
    return _layout_steps(header, channels_last)[0]


def resolved_scale(header: ArrayHeader, scale: str) -> str:
    """"uint8", "none" or "minmax": what `scale` = "auto" means for this array."""
    if scale == "auto":
        return "uint8" if header.dtype == np.uint8 else "none"
    return scale


def resolved_levels(header: ArrayHeader, scale: str, levels: int | str) -> int | None:
    """The number of discrete levels per dimension (None: continuous) that `levels` ("auto", "none" or L) means."""
    if levels == "auto":
        return 256 if resolved_scale(header, scale) == "uint8" else None
    return None if levels == "none" else int(levels)


def _layout_steps(header: ArrayHeader, channels_last: bool | str) -> tuple[tuple[int, ...], bool, bool]:
    """(example shape, transpose NHWC -> NCHW?, add a channel axis?)."""
    shape = header.shape
    if len(shape) < 2:
        raise ConfigError(
            f"{WHERE}: the array in '{header.path}' has shape {shape}; expected [N, ...] with one example per row",
            hint="save 1-D data as an [N, 1] array",
        )
    if shape[0] == 0:
        raise ConfigError(f"{WHERE}: the array in '{header.path}' is empty (shape {shape}): it has no examples")
    if 0 in shape[1:]:
        raise ConfigError(
            f"{WHERE}: the array in '{header.path}' has shape {shape}: its examples hold no values "
            f"(axis {shape.index(0, 1)} has length 0)",
            hint="expected [N, ...] with at least one value per example, e.g. [N, 2] for 2-D points",
        )
    if channels_last is True:
        if len(shape) != 4:
            raise ConfigError(
                f"{WHERE}: channels_last = true needs a 4-D [N, H, W, C] array; '{header.path}' has shape {shape}"
            )
        return (shape[3], shape[1], shape[2]), True, False
    if channels_last == "auto" and header.dtype == np.uint8:
        if len(shape) == 4 and shape[3] in (1, 3):
            return (shape[3], shape[1], shape[2]), True, False
        if len(shape) == 3:
            return (1, shape[1], shape[2]), False, True
    return shape[1:], False, False


def load_array(
    path: str, key: str | None, scale: str, levels: int | str, channels_last: bool | str
) -> torch.Tensor:
    """The array as float32 [N, *example_shape] in [-1, 1], following the steps in the module docstring."""
    header = read_header(path, key)
    _, transpose, add_channel = _layout_steps(header, channels_last)
    if header.dtype.kind not in "biuf":
        raise ConfigError(
            f"{WHERE}: the array in '{path}' has dtype {header.dtype}; expected numbers (bool, int, uint or float)"
        )
    if header.key is None:
        array = np.load(header.path, allow_pickle=False)
    else:
        with np.load(header.path, allow_pickle=False) as archive:
            array = archive[header.key]
    if array.dtype.kind in "biu" and array.dtype != np.uint8:
        array = array.astype(np.int64)  # torch has few operations for uint16/uint32 and none for bool arithmetic
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        nan, inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
        first = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise ConfigError(
            f"{WHERE}: the array in '{path}' has {nan} NaN and {inf} infinite values (the first at index {first})",
            hint="remove or replace them before training",
        )
    if transpose:
        array = array.transpose(0, 3, 1, 2)
    if add_channel:
        array = array[:, None]
    data = _scale(torch.from_numpy(np.ascontiguousarray(array)), resolved_scale(header, scale), path)
    grid = resolved_levels(header, scale, levels)
    return _snap_to_levels(data, grid, path) if grid is not None else data


def load_labels(path: str, key: str) -> tuple[list[str], torch.Tensor]:
    """(class names, class index of each example [N]) from the labels array `key` of an .npz.

    The classes are the array's distinct values, sorted (integers or strings); each
    is named by its value, and class k is the k-th of them.
    """
    if not str(path).endswith(".npz"):
        raise ConfigError(
            f"{WHERE}: option 'labels_key': '{path}' is a .npy file, which holds one array; labels need a second",
            hint="save data and labels together: np.savez(file, images=..., labels=...)",
        )
    with np.load(Path(path).expanduser(), allow_pickle=False) as archive:
        if key not in archive.files:
            raise ConfigError(
                f"{WHERE}: option 'labels_key': '{path}' has no array '{key}'",
                hint=f"its arrays are: {', '.join(archive.files)}",
            )
        values = archive[key]
    if values.ndim != 1 or values.dtype.kind not in "biuU":
        raise ConfigError(
            f"{WHERE}: the labels '{key}' in '{path}' must be one integer or string per example, "
            f"not an array of shape {values.shape} and dtype {values.dtype}"
        )
    classes, index = np.unique(values, return_inverse=True)
    return [str(c) for c in classes.tolist()], torch.from_numpy(index.reshape(-1)).long()


def _scale(values: torch.Tensor, scale: str, path: str) -> torch.Tensor:
    low, high = values.min().item(), values.max().item()
    if scale == "uint8":
        whole = not values.is_floating_point() or torch.equal(values, values.round())
        if low < 0 or high > 255 or not whole:
            raise ConfigError(
                f"{WHERE}: scale = 'uint8' expects integers 0..255; '{path}' holds values from {low:g} to {high:g}"
            )
        return values.float() / 127.5 - 1
    if scale == "minmax":
        if low == high:
            raise ConfigError(f"{WHERE}: scale = 'minmax' cannot map '{path}': every value is {low:g}")
        # In halves (exact in float64): high - low overflows for data near +-1.8e308, and the map then gives NaN.
        return ((values.double() / 2 - low / 2) / (high / 2 - low / 2) * 2 - 1).float()
    if low < -1 or high > 1:
        raise ConfigError(
            f"{WHERE}: the data in '{path}' range from {low:g} to {high:g}, outside [-1, 1] (scale = 'none')",
            hint="set scale = 'minmax' to map [min, max] onto [-1, 1], or scale = 'uint8' for 8-bit values 0..255",
        )
    return values.float()


def _snap_to_levels(data: torch.Tensor, levels: int, path: str) -> torch.Tensor:
    """Put values within 1e-3 of a grid step exactly onto the grid of `levels` values; ConfigError otherwise."""
    steps = (data.double() + 1) * (levels - 1) / 2
    off = (steps - steps.round()).abs().max().item()
    if off > 1e-3:
        raise ConfigError(
            f"{WHERE}: the data in '{path}' do not lie on the grid of {levels} levels in [-1, 1] "
            f"(a value is {off:.3g} of a step away from it)",
            hint="set discrete_levels = 'none' for continuous data, or to the number of values your data take",
        )
    # The same float32 arithmetic as v / 127.5 - 1 for 8-bit images, so both give identical values.
    return steps.round().float() / ((levels - 1) / 2) - 1
