"""Reading images as people see them: one loader for training, evaluation, the feature cache and scoring.

Every image becomes 8-bit RGB the way a viewer shows it: EXIF orientation applied; 16-bit (``I;16``,
``I;16B``, ``I``) scaled from 0..65535 and float (``F``) from 0..1 to 0..255 (not clipped to white);
transparency (``RGBA``, ``LA``, ``PA``, palette or greyscale with a transparent colour) composited over
a white background (``BACKGROUND``); CMYK converted; animated files (GIF, APNG, WebP) give their
first frame.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .records import Record

BACKGROUND = (255, 255, 255)  # white, as browsers and viewers show transparent pixels on a page
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # "I" holds 16-bit files (PNG, TIFF) in PIL
READ_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _scaled_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit (0..65535) or float (0..1) greyscale as 8-bit greyscale, values scaled, not clipped."""
    pixels = np.asarray(image, dtype=np.float64)
    full_scale = 1.0 if image.mode == "F" else 65535.0
    return Image.fromarray(np.clip(np.rint(pixels * (255.0 / full_scale)), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """An opened image (its current frame) as the RGB picture a viewer shows; see the module docstring."""
    image = ImageOps.exif_transpose(image)
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
        image = _scaled_to_8bit(image)
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND + (255,)), rgba)
    return image.convert("RGB")


def load_rgb(path) -> Image.Image:
    """Open an image file and return it as displayed (``to_rgb``), or an error that names the file."""
    try:
        with Image.open(path) as image:
            image.load()  # the first frame of an animated file
            return to_rgb(image)
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except READ_ERRORS as error:
        raise ValueError(f"cannot read image {path}: {read_problem(error, path)}") from error


def read_problem(error: Exception, path) -> str:
    """A short reason for a read error (PIL's "cannot identify" message repeats the full path)."""
    if isinstance(error, Image.UnidentifiedImageError):
        return "empty file" if os.path.getsize(path) == 0 else "not an image"
    return str(error) or type(error).__name__


def header_problem(path: Path) -> str | None:
    """Why the file is not a readable image (empty, not an image, a damaged PNG...), or None.

    Cheap: PIL's ``verify`` checks the structure (and a PNG's checksums) without decoding the pixels,
    so a JPEG cut short inside its pixel data still passes and fails later, when it is decoded.
    """
    try:
        with Image.open(path) as image:
            image.verify()
        return None
    except READ_ERRORS as error:
        return read_problem(error, path)


def require_readable(records: list[Record], source: str) -> None:
    """One error that counts and names (relative to the dataset root) every image failing ``header_problem``."""
    problems = [(r.file_name, problem) for r in records if (problem := header_problem(r.path))]
    if problems:
        shown = "; ".join(f"{name} ({problem})" for name, problem in problems[:5])
        more = f" and {len(problems) - 5} more" if len(problems) > 5 else ""
        raise ValueError(f"{source}: {len(problems)} of {len(records)} image(s) cannot be read: {shown}{more}. "
                         "Replace or remove them, or leave them out with --data.skip_bad_images true")


def readable_image(path: Path) -> bool:
    """Whether the image decodes fully (JPEGs in draft mode: truncation still shows, at a fraction of the cost)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (64, 64))
            image.load()
        return True
    except READ_ERRORS:
        return False


def scan_images(records: list[Record]) -> list[Record]:
    """The records whose image decodes; one warning counts and names the others."""
    bad = [r for r in records if not readable_image(r.path)]
    if bad:
        warnings.warn(f"skip_bad_images: left out {len(bad)} of {len(records)} unreadable image(s), e.g. "
                      f"{', '.join(r.file_name for r in bad[:5])}", stacklevel=2)
        bad_names = {r.file_name for r in bad}
        records = [r for r in records if r.file_name not in bad_names]
    return records
