"""Reading images as people see them: one loader for training, evaluation, the feature cache and scoring.

Every image becomes 8-bit RGB the way a colour-managed viewer shows it: EXIF orientation applied; an
embedded ICC profile converted to sRGB (``PIL.ImageCms``; untagged images are taken as sRGB, a damaged
profile is ignored as viewers do); 16-bit (``I;16``, ``I;16B``, ``I``) scaled from 0..65535 and float
(``F``) from 0..1 to 0..255 (not clipped to white); transparency (``RGBA``, ``LA``, ``PA``, palette or
greyscale with a transparent colour) composited over a white background (``BACKGROUND``); CMYK converted;
animated files (GIF, APNG, WebP) give their first frame.

Every file is treated as possibly hostile: only regular files are opened (a FIFO, device or socket named
``.png`` is refused by type, never opened, so it cannot hang a run); only Pillow's decoders that run no
outside program are tried (``READABLE_FORMATS``: EPS, which runs Ghostscript, is not); and images that would
explode in memory are refused from their header, before decoding: more than ``MAX_PIXELS`` pixels, an
aspect ratio above ``MAX_ASPECT_RATIO`` (a 274-byte PNG of 1 x 100,000 pixels becomes 224 x 22,400,000
after the resize of the short side), or more than ``MAX_DECODED_BYTES`` of memory to decode and convert
(``decoded_bytes``: from the size and the mode, which for a TIFF follows its sample format and bits; a
compressed float TIFF of under a megabyte can need gigabytes). Loaders run at most
``decoding_workers(requested)`` decoding processes, so together they stay within half the machine's memory.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps

from ..errors import InputError

BACKGROUND = (255, 255, 255)  # white, as browsers and viewers show transparent pixels on a page
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" holds 16-bit files (PNG, TIFF) in PIL
MAX_PIXELS = 89_478_485  # Pillow's own warning threshold: 0.27 GB as RGB; 8K x 8K (67 M) fits
MAX_ASPECT_RATIO = 50  # long side / short side; 50 keeps the eval resize under 224 x 11,200
UNSAFE_FORMATS = {"EPS": "runs Ghostscript", "MPEG": "no decoder", "IPTC": "not a picture"}
# Memory one image may take while it is decoded and converted to RGB (what a worker holds at its peak): any
# 8-bit image within MAX_PIXELS fits (RGB at the limit: 1.07 GB); float and 16-bit pixels cost 3x as much.
MAX_DECODED_BYTES = 5 << 28  # 1.25 GiB
STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # per pixel; other modes: 4
SCALING_BYTES = 25  # 16-bit and float pixels: float64 copies while scaling to 8 bits (see _scaled_to_8bit)
RGB_BYTES = 8  # the RGB result and one working copy (colour profile, transparency)
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, ImageCms.PyCMSError)

# Pillow warns between MAX_PIXELS and twice that; such images are refused here with their size instead.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def _readable_formats() -> tuple[str, ...]:
    """Pillow's formats that decode pixels here without an outside program (no stubs, no EPS)."""
    Image.init()
    return tuple(sorted(name for name, (factory, _) in Image.OPEN.items() if name not in UNSAFE_FORMATS
                        and not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))))


READABLE_FORMATS = _readable_formats()
IMAGE_EXTENSIONS = frozenset(suffix for suffix, name in Image.registered_extensions().items()
                             if name in READABLE_FORMATS)  # .jpg .png .gif .webp .avif .tif .bmp ...


class ImageError(InputError):
    """An image that cannot be used; ``reason`` is the short why ("empty file", "not found", ...) that the
    score CSVs' ``error`` column holds, the message also names the file."""

    def __init__(self, path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}")
        self.path, self.reason = path, reason


class ImageNotFound(ImageError, FileNotFoundError):
    """The image file is not there."""


def error_reason(error: BaseException) -> str:
    """The short reason of an image error for an ``error`` column (the row already names the file)."""
    return error.reason if isinstance(error, ImageError) else (str(error) or type(error).__name__)


FILE_TYPES = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_problem(path) -> str | None:
    """Why ``path`` is not a regular file to open ("not found", "a FIFO (named pipe), not a regular file"...),
    or None. Only ``os.stat`` (links followed): a special file is never opened, so it cannot block."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "not found"
    except OSError as error:
        return error.strerror or type(error).__name__
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in FILE_TYPES if test(mode)), "a special file")
    return f"{kind}, not a regular file"


def size_problem(width: int, height: int) -> str | None:
    """Why an image of this size is refused before decoding (the limit named), or None."""
    if width * height > MAX_PIXELS:
        return f"{width} x {height} pixels: {width * height:,} pixels exceed the limit {MAX_PIXELS:,}"
    ratio = max(width, height) / max(min(width, height), 1)
    if ratio > MAX_ASPECT_RATIO:
        shown = f"{ratio:,.1f}".rstrip("0").rstrip(".")
        return f"{width} x {height} pixels: aspect ratio {shown} exceeds the limit {MAX_ASPECT_RATIO}"
    return None


def decoded_bytes(mode: str, width: int, height: int) -> int:
    """About the most memory decoding an image of this mode and size into RGB takes (the pixels as Pillow
    stores them, the scaling of 16-bit and float pixels, the RGB result)."""
    per_pixel = STORED_BYTES.get(mode, 4) + RGB_BYTES
    if mode in SIXTEEN_BIT_MODES or mode == "F":
        per_pixel += SCALING_BYTES
    return width * height * per_pixel


def memory_problem(mode: str, width: int, height: int) -> str | None:
    """Why an image would take too much memory to decode (the limit named), or None."""
    needed = decoded_bytes(mode, width, height)
    if needed <= MAX_DECODED_BYTES:
        return None
    return (f"{width} x {height} pixels of mode {mode}: decoding takes about {needed / 2**30:.1f} GiB, more than "
            f"the limit {MAX_DECODED_BYTES / 2**30:.1f} GiB")


def machine_memory() -> int | None:
    """Bytes of memory this machine has, or None when the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def decoding_workers(requested: int) -> int:
    """How many processes may decode images at once: ``requested``, fewer when each holding an image of
    ``MAX_DECODED_BYTES`` would take more than half the machine's memory (one warning says so)."""
    memory = machine_memory()
    if requested <= 1 or memory is None:
        return requested
    allowed = max(1, memory // 2 // MAX_DECODED_BYTES)
    if requested <= allowed:
        return requested
    warnings.warn(f"decoding images in {allowed} worker(s), not {requested}: each may hold up to "
                  f"{MAX_DECODED_BYTES / 2**30:.1f} GiB while decoding, and this machine has "
                  f"{memory / 2**30:.1f} GiB", stacklevel=2)
    return allowed


def _is_empty(source) -> bool:
    if isinstance(source, (str, os.PathLike)):
        return os.path.getsize(source) == 0
    return source.seek(0, os.SEEK_END) == 0  # an in-memory file (image bytes of a hub dataset)


def read_problem(error: Exception, source) -> str:
    """A short reason for a read error (PIL's "cannot identify" message repeats the full path)."""
    if isinstance(error, Image.UnidentifiedImageError):
        return "empty file" if _is_empty(source) else "not an image"
    if isinstance(error, Image.DecompressionBombError):  # refused by Pillow at open, above twice MAX_PIXELS
        found = re.search(r"\((\d+) pixels\)", str(error))
        return f"{int(found.group(1)):,} pixels exceed the limit {MAX_PIXELS:,}" if found else str(error)
    return str(error) or type(error).__name__


@contextlib.contextmanager
def open_image(source, name: str | None = None):
    """``Image.open`` of a regular file (or an in-memory binary file, e.g. ``io.BytesIO``), its header checked
    against the limits; pixels not decoded yet. Raises ``ImageError`` (``ImageNotFound``) naming the file (or
    ``name``) and the reason."""
    name = source if name is None else name
    if isinstance(source, (str, os.PathLike)):
        problem = file_problem(source)
        if problem is not None:
            raise (ImageNotFound if problem == "not found" else ImageError)(name, problem)
    try:
        with Image.open(source, formats=READABLE_FORMATS) as image:
            problem = size_problem(*image.size) or memory_problem(image.mode, *image.size)
            if problem is not None:
                raise ImageError(name, problem)
            yield image
    except ImageError:
        raise
    except READ_ERRORS as error:
        raise ImageError(name, read_problem(error, source)) from error


def _scaled_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (0..65535) or float (0..1) greyscale as 8-bit greyscale, values scaled, not clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    full_scale = 1.0 if image.mode == "F" else 65535.0
    return Image.fromarray(np.clip(np.rint(pixels * (255.0 / full_scale)), 0, 255).astype(np.uint8), "L")


SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
PROFILE_MODES = {"RGB": "RGB", "GRAY": "L", "CMYK": "CMYK"}  # ICC colour space -> the PIL mode it describes
CACHED_PROFILE_BYTES = 1 << 20  # display profiles are a few KB; a hostile 100 MB one is used once, not kept


@functools.lru_cache(maxsize=16)  # a data set has few distinct profiles; building a transform costs ms
def srgb_transform(icc: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """The transform from an embedded ICC profile to sRGB for ``mode`` pixels, or None when the profile
    cannot be read or describes another colour space (the image is then shown untagged, as viewers do)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if PROFILE_MODES.get(source.profile.xcolor_space.strip()) != mode:
            return None
        return ImageCms.buildTransform(source, SRGB, mode, "RGB")
    except (OSError, ValueError, TypeError, ImageCms.PyCMSError):
        return None


def to_rgb(image: Image.Image) -> Image.Image:
    """An opened image (its current frame) as the RGB picture a viewer shows; see the module docstring.
    Refuses (``ImageError``) a size over the limits, as the loader does before decoding."""
    problem = size_problem(*image.size) or memory_problem(image.mode, *image.size)
    if problem is not None:
        raise ImageError(getattr(image, "filename", "") or "in memory", problem)
    icc = image.info.get("icc_profile")
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        image = _scaled_to_8bit(image)
    alpha = None
    if image.has_transparency_data:
        image = image.convert("LA" if image.mode == "LA" else "RGBA")
        alpha = image.getchannel("A")
        image = image.convert(image.mode[:-1])  # the colour channels: L or RGB
    elif image.mode not in PROFILE_MODES.values():
        image = image.convert("RGB")  # palette, 1-bit, YCbCr ...
    icc = bytes(icc or b"")
    build = srgb_transform if len(icc) <= CACHED_PROFILE_BYTES else srgb_transform.__wrapped__  # big: not kept
    transform = build(icc, image.mode) if icc else None
    image = ImageCms.applyTransform(image, transform) if transform is not None else image.convert("RGB")
    if alpha is None:
        return image
    image.putalpha(alpha)
    return Image.alpha_composite(Image.new("RGBA", image.size, BACKGROUND + (255,)), image).convert("RGB")


def load_rgb(source, name: str | None = None) -> Image.Image:
    """Open an image file (or in-memory binary file, named by ``name`` in errors) and return it as displayed
    (``to_rgb``), or an ``ImageError`` naming it (``ImageNotFound``, also a ``FileNotFoundError``, when a file
    is not there)."""
    with open_image(source, name) as image:
        image.load()  # the first frame of an animated file
        return to_rgb(image)


def header_problem(path: Path) -> str | None:
    """Why the file is not a readable image (not a regular file, empty, not an image, over the size
    limits, a damaged PNG...), or None.

    Cheap: PIL's ``verify`` checks the structure (and a PNG's checksums) without decoding the pixels,
    so a JPEG cut short inside its pixel data still passes and fails later, when it is decoded.
    """
    try:
        with open_image(path) as image:
            image.verify()
        return None
    except ImageError as error:
        return error.reason


def readable_image(path: Path) -> bool:
    """Whether the image decodes fully (JPEGs in draft mode: truncation still shows, at a fraction of the cost)."""
    try:
        with open_image(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except ImageError:
        return False


# --- folder scans -------------------------------------------------------------------------------------------
def _identity(path) -> tuple[int, int]:
    found = os.stat(path)
    return found.st_dev, found.st_ino


def scan_folder(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Every image under ``root`` (recursively, links followed once, sorted) and what the scan left out, with
    why: a file of no format the loader reads, a special file (FIFO, device, socket: never opened), a folder
    that cannot be listed. Hidden files and folders (``.name``, e.g. ``.feature_cache``) are not looked into."""
    images, skipped = [], []
    seen = {_identity(root)}

    def unreadable(error: OSError) -> None:
        skipped.append((Path(error.filename), f"folder cannot be read ({error.strerror})"))

    for folder, folders, files in os.walk(root, onerror=unreadable, followlinks=True):
        kept = []
        for name in sorted(folders):
            try:
                key = _identity(os.path.join(folder, name))
            except OSError:
                continue
            if not name.startswith(".") and key not in seen:  # a link back up is walked once
                seen.add(key)
                kept.append(name)
        folders[:] = kept
        for name in files:
            path = Path(folder, name)
            if name.startswith("."):
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((path, "not an image format"))
            elif (problem := file_problem(path)) is not None:
                skipped.append((path, problem))
            else:
                images.append(path)
    return sorted(images), sorted(skipped)


def warn_skipped(root: Path, skipped: list[tuple[Path, str]], limit: int = 5) -> None:
    """One warning that counts and names what a folder scan left out (see ``scan_folder``)."""
    if skipped:
        shown = "; ".join(f"{path.relative_to(root) if path.is_relative_to(root) else path} ({why})"
                          for path, why in skipped[:limit])
        more = f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
        warnings.warn(f"{root}: the scan left out {len(skipped)} file(s) or folder(s): {shown}{more}", stacklevel=2)
