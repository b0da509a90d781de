"""Image data: the scikit-learn digits, the procedural shapes set, and a user's folder of images.

Every function here returns images as [N, C, H, W] scaled to [-1, 1]. 8-bit
images are kept as uint8 until the end and mapped by `from_uint8` (v / 127.5
- 1), so each value lies exactly on the grid of 256 levels that the
discretized decoder of the likelihood bound assumes.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from workbench.errors import ConfigError


def from_uint8(values: torch.Tensor) -> torch.Tensor:
    """Map 8-bit values 0..255 to float32 in [-1, 1]: 0 -> -1, 255 -> 1."""
    return values.float() / 127.5 - 1


# --- the scikit-learn digits --------------------------------------------------

DIGITS_INSTALL = "pip install 'workbench[digits]'"


def load_digits(classes: list[int] | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1797 8x8 digits of scikit-learn (UCI optdigits test set), in an order shuffled by `generator`.

    Each pixel counts the set pixels of a 4x4 block of the original 32x32
    bitmap, so it takes the 17 values 0..16, mapped to [-1, 1] as v/8 - 1.
    Returns (images [N, 1, 8, 8] float32, labels [N] int64).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ConfigError(
            "dataset 'digits' needs scikit-learn, which is not installed",
            hint=f"install it with: {DIGITS_INSTALL}   (or: pip install scikit-learn)",
        ) from None
    bunch = sklearn_digits()  # reads a file shipped inside scikit-learn: no download
    images = torch.from_numpy(bunch.images).float().unsqueeze(1) / 8 - 1
    labels = torch.from_numpy(bunch.target).long()
    if classes is not None:
        keep = torch.isin(labels, torch.tensor(classes))
        images, labels = images[keep], labels[keep]
    order = torch.randperm(len(labels), generator=generator)
    return images[order].contiguous(), labels[order]


# --- procedural shapes --------------------------------------------------------

SHAPE_CLASSES = ("disc", "square", "triangle")
"""Label k of the shapes set is SHAPE_CLASSES[k]."""


def shape_parameters(n: int, size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Draw what each of n images shows: class, centre, circumradius, rotation, colour.

    The circumradius is uniform in [0.15, 0.4] * size and the centre keeps the
    circumscribed circle inside the image, so every shape is seen whole.
    Colours are uniform in [0.2, 1] per channel: visible on the black background.
    """
    label = torch.randint(0, len(SHAPE_CLASSES), (n,), generator=generator)
    radius = size * (0.15 + 0.25 * torch.rand(n, generator=generator))
    centre = radius[:, None] + (size - 2 * radius[:, None]) * torch.rand(n, 2, generator=generator)
    rotation = 2 * math.pi * torch.rand(n, generator=generator)
    colour = 0.2 + 0.8 * torch.rand(n, 3, generator=generator)
    return {"label": label, "radius": radius, "centre": centre, "rotation": rotation, "colour": colour}


def draw_shapes(n: int, size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """n RGB images [n, 3, size, size] uint8, one shape each on black, and their labels [n].

    Each shape is rendered from its signed distance d (in pixels, negative
    inside) at every pixel centre; coverage clamp(0.5 - d, 0, 1) anti-aliases
    the edge over one pixel. A disc is |p - c| - r; a regular k-gon (square,
    triangle) is the intersection of k half-planes, max_j(n_j . (p - c)) - a
    with a = r cos(pi/k) its inradius (exact inside and on the edges, within
    a fraction of a pixel of exact at the outer corners).
    """
    params = shape_parameters(n, size, generator)
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    chunk = max(1, 2**22 // (size * size))  # bounds the [chunk, size, size, k] temporaries
    for start in range(0, n, chunk):
        part = {key: value[start : start + chunk] for key, value in params.items()}
        images[start : start + chunk] = _render(part, size)
    return images, params["label"]


def _render(params: dict[str, torch.Tensor], size: int) -> torch.Tensor:
    pixel = torch.arange(size, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(pixel, pixel, indexing="ij")
    offset = torch.stack([x, y], dim=-1) - params["centre"][:, None, None, :]  # [B, H, W, 2]
    radius = params["radius"][:, None, None]

    distance = offset.norm(dim=-1) - radius  # the disc
    for label, sides in ((1, 4), (2, 3)):
        chosen = params["label"] == label
        if chosen.any():
            distance[chosen] = _polygon_distance(
                offset[chosen], radius[chosen], params["rotation"][chosen], sides
            )
    coverage = (0.5 - distance).clamp(0, 1)
    image = coverage[:, None] * params["colour"][:, :, None, None]
    return (image * 255).round().to(torch.uint8)


def _polygon_distance(
    offset: torch.Tensor, radius: torch.Tensor, rotation: torch.Tensor, sides: int
) -> torch.Tensor:
    """Signed distance to regular polygons with circumradius `radius`, rotated by `rotation`."""
    angles = rotation[:, None] + torch.arange(sides) * (2 * math.pi / sides)  # [B, sides]
    normals = torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1)  # [B, sides, 2]
    along_normals = torch.einsum("bhwc,bkc->bhwk", offset, normals)
    return along_normals.amax(dim=-1) - radius * math.cos(math.pi / sides)


# --- a folder of images -------------------------------------------------------

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
"""Files with these extensions (any case) are read; all others are ignored."""


def find_images(path: str, recursive: bool) -> list[Path]:
    """The image files in folder `path` (in subfolders too when `recursive`), sorted; ConfigError if none."""
    root = Path(path).expanduser()
    if not root.exists():
        raise ConfigError(
            f"dataset 'folder': option 'path': '{path}' does not exist",
            hint=f"give a folder of images; relative paths start from {Path.cwd()}",
        )
    if not root.is_dir():
        raise ConfigError(
            f"dataset 'folder': option 'path': '{path}' is a file, not a folder",
            hint="give the folder that holds the images (for an array file use dataset 'npz')",
        )
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(p for p in candidates if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        where = "in it or its subfolders" if recursive else "in it (subfolders are not searched)"
        raise ConfigError(
            f"dataset 'folder': no images in '{path}': looked for {' '.join(IMAGE_EXTENSIONS)} {where}",
            hint=None if recursive else "set recursive = true to search subfolders",
        )
    return files


def read_image(path: Path, size: int, channels: int) -> np.ndarray:
    """One image file as uint8 [channels, size, size]: shorter side resized to `size`, centre cropped.

    Transparent pixels are composited over black; 16-bit greyscale is
    reduced to 8 bits. Pillow's exceptions pass through (the caller decides
    whether to skip the file).
    """
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as image:
        image.draft(mode, (size, size))  # JPEG only: decode at a reduced scale that still covers size x size
        image = _to_mode(image, mode)
    image = _resize_and_crop(image, size)
    array = np.array(image, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one
    return array[None] if channels == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _to_mode(image: Image.Image, mode: str) -> Image.Image:
    if image.mode.startswith("I;16") or image.mode == "I":  # Pillow's convert would clip 16-bit values at 255
        image = Image.fromarray((np.asarray(image, dtype=np.float64) / 257).round().clip(0, 255).astype(np.uint8))
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image.convert(mode)


def _resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Scale so the shorter side is `size` (bicubic; Pillow filters when shrinking), then cut the centre square."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageFiles(torch.utils.data.Dataset):
    """A folder too large to hold in memory: each item is read from its file when asked for.

    `dataset[i]` is float32 [channels, size, size] in [-1, 1]. Only plain
    attributes are stored, so DataLoader worker processes can pickle it.
    """

    def __init__(self, files: list[Path], size: int, channels: int) -> None:
        self.files = list(files)
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        path = self.files[index]
        try:
            array = read_image(path, self.size, self.channels)
        except Exception as exc:  # any decoder failure of a user's file
            raise ConfigError(
                f"dataset 'folder': cannot read image '{path}': {exc}",
                hint="remove or repair the file (a large folder is read lazily: only headers were checked up front)",
            ) from exc
        return from_uint8(torch.from_numpy(array))


def class_folders(path: str) -> list[str]:
    """The class names of a folder in torchvision's ImageFolder layout: its sub-folders holding images, sorted."""
    root = Path(path).expanduser()
    find_images(path, recursive=True)  # the usual errors for a missing folder or one without images
    return sorted(
        d.name for d in root.iterdir()
        if d.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() for p in d.rglob("*"))
    )


def folder_labels(path: str, files: list[Path]) -> torch.Tensor:
    """The class index of each file: the position of its top sub-folder in `class_folders(path)`."""
    root = Path(path).expanduser()
    names = class_folders(path)
    return torch.tensor([names.index(f.relative_to(root).parts[0]) for f in files], dtype=torch.long)


def load_folder(
    path: str, size: int, channels: int, recursive: bool, on_error: str, in_memory_limit: int,
    class_folders: bool = False,
) -> torch.Tensor | ImageFiles:
    """See `load_folder_files`: the data only."""
    return load_folder_files(path, size, channels, recursive, on_error, in_memory_limit, class_folders)[0]


def load_folder_files(
    path: str, size: int, channels: int, recursive: bool, on_error: str, in_memory_limit: int,
    class_folders: bool = False,
) -> tuple[torch.Tensor | ImageFiles, list[Path]]:
    """(the data, the files read, in the data's order). With `class_folders`, only images inside
    sub-folders are read (at any depth). The labels of a conditional run read the folder a second
    time: what is read is what is labelled, unreadable files included."""
    data, files = _load_folder(path, size, channels, recursive or class_folders, on_error, in_memory_limit, class_folders)
    return data, files


def _load_folder(
    path: str, size: int, channels: int, recursive: bool, on_error: str, in_memory_limit: int, in_subfolders: bool
) -> tuple[torch.Tensor | ImageFiles, list[Path]]:
    """The folder's images as one float32 tensor [N, channels, size, size]; an ImageFiles if N > in_memory_limit.

    A file Pillow cannot read is skipped, with one warning listing all such
    files (on_error = "skip"), or is an error naming it (on_error = "fail").
    Above the limit only each file's header is read now (Image.open reads no
    pixels); a file that fails to decode later raises when its turn comes.
    """
    files = find_images(path, recursive)
    if in_subfolders:
        root = Path(path).expanduser()
        files = [f for f in files if len(f.relative_to(root).parts) > 1]
    lazy = len(files) > in_memory_limit
    readable, arrays, unreadable = [], [], []
    for file in files:
        try:
            if lazy:
                with Image.open(file):
                    pass
            else:
                arrays.append(read_image(file, size, channels))
        except Exception as exc:  # any decoder failure of a user's file
            if on_error == "fail":
                raise ConfigError(
                    f"dataset 'folder': cannot read image '{file}': {exc}",
                    hint='remove or repair the file, or set on_error = "skip" to leave unreadable files out',
                ) from None
            unreadable.append(file)
            continue
        readable.append(file)
    if not readable:
        raise ConfigError(f"dataset 'folder': none of the {len(files)} images in '{path}' could be read")
    if unreadable:
        shown = ", ".join(str(file) for file in unreadable[:10])
        more = f" and {len(unreadable) - 10} more" if len(unreadable) > 10 else ""
        warnings.warn(
            f"dataset 'folder': skipped {len(unreadable)} unreadable of {len(files)} images: {shown}{more}",
            stacklevel=2,
        )
    if lazy:
        return ImageFiles(readable, size, channels), readable
    return from_uint8(torch.from_numpy(np.stack(arrays))), readable
