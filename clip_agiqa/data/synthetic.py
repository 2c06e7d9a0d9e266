"""SyntheticAIGI: a generated demo dataset in the MOSFolder format, so the demo and tests need no network.

Each picture is a random composition of shapes on a gradient; a distortion strength in [0, 1] (blur,
noise, JPEG blocking, desaturation) is applied and sets its quality MOS (``mos``): 5 * (1 - strength) plus
rater noise. Each picture also has a generation prompt ("a red circle on a blue background") that it may
not follow: with probability 1/2 the prompt names another background colour, and 1/4 another shape too.
The alignment MOS (``align``) says how well the picture matches its prompt (5 when it does, 2.5 for a wrong
background, 1 for a wrong background and shape, plus rater noise): only a model that reads the prompt can predict it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..files import atomic_write
from .folder import MOSFolder, MOSFolderReader

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (240, 210, 40),
           "purple": (150, 50, 180), "orange": (245, 140, 30)}
SHAPES = ("circle", "square", "triangle")
COMPLETE_MARKER = ".complete"
FORMAT = "3"  # 3: the align column; prompts may name another background colour and shape


def _picture(rng: np.random.Generator, size: int) -> tuple[Image.Image, tuple[str, str, str]]:
    names = list(COLOURS)
    background, colour = rng.choice(names, size=2, replace=False)
    shape = SHAPES[rng.integers(len(SHAPES))]
    ramp = np.linspace(0.5, 1.0, size)[None, :, None]
    pixels = (np.array(COLOURS[background])[None, None, :] * ramp).repeat(size, axis=0)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):
        x, y = rng.integers(0, size * 3 // 4, size=2)
        r = int(rng.integers(size // 8, size // 3))
        box = [int(x), int(y), int(x) + r, int(y) + r]
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour], outline=(0, 0, 0))
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[colour], outline=(0, 0, 0))
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])],
                         fill=COLOURS[colour], outline=(0, 0, 0))
    # Fine texture, so that blur and noise have something to destroy.
    texture = rng.normal(0, 12, size=(size, size, 1))
    image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + texture, 0, 255).astype(np.uint8))
    return image, (str(colour), shape, str(background))


def _distort(image: Image.Image, strength: float, rng: np.random.Generator) -> Image.Image:
    image = image.filter(ImageFilter.GaussianBlur(radius=3.0 * strength))
    pixels = np.asarray(image, dtype=np.float64)
    grey = pixels.mean(axis=2, keepdims=True)
    pixels = pixels * (1 - 0.6 * strength) + grey * 0.6 * strength
    pixels = pixels + rng.normal(0, 50 * strength, size=pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(95 - 90 * strength))
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def _prompt(colour: str, shape: str, background: str, rng: np.random.Generator) -> tuple[str, float]:
    """The generation prompt of a picture and the alignment MOS of the picture with it."""
    alignment = 5.0
    if rng.uniform() < 0.5:  # the generator missed the background colour
        background = str(rng.choice([c for c in COLOURS if c not in (colour, background)]))
        alignment = 2.5
        if rng.uniform() < 0.5:  # ... and the shape
            shape = str(rng.choice([s for s in SHAPES if s != shape]))
            alignment = 1.0
    alignment = float(np.clip(alignment + rng.normal(0, 0.3), 0, 5))
    return f"a {colour} {shape} on a {background} background", alignment


def write_synthetic_dataset(root: Path, num_images: int = 200, picture_size: int = 64, seed: int = 0) -> Path:
    """Write ``num_images`` PNGs and ``metadata.csv`` (file_name,mos,align,prompt) into root; returns the CSV."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    prompt_rng = np.random.default_rng([seed, 1])  # its own stream: the pictures and quality MOS stay as they were
    rows = []
    for index in range(num_images):
        image, (colour, shape, background) = _picture(rng, picture_size)
        strength = float(rng.uniform(0, 1))
        mos = float(np.clip(5 * (1 - strength) + rng.normal(0, 0.2), 0, 5))
        name = f"synthetic_{index:05d}.png"
        _distort(image, strength, rng).save(root / name)
        prompt, align = _prompt(colour, shape, background, prompt_rng)
        rows.append((name, f"{mos:.4f}", f"{align:.4f}", prompt))
    with atomic_write(root / "metadata.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "mos", "align", "prompt"])
        writer.writerows(rows)
    with atomic_write(root / COMPLETE_MARKER) as handle:
        handle.write(f"{num_images} {picture_size} {seed} {FORMAT}\n")
    return root / "metadata.csv"


class SyntheticReader(MOSFolderReader):
    """A ``MOSFolderReader`` that first generates the dataset when ``root`` holds no complete copy."""

    name = "SyntheticAIGI"

    def __init__(self, metadata: str = "metadata.csv", columns=("mos",), num_images: int = 200,
                 picture_size: int = 64, data_seed: int = 0):
        super().__init__(metadata, columns)
        self.num_images, self.picture_size, self.data_seed = num_images, picture_size, data_seed

    def is_complete(self, root: Path) -> bool:
        marker = root / COMPLETE_MARKER
        return marker.is_file() and marker.read_text().split() == [
            str(self.num_images), str(self.picture_size), str(self.data_seed), FORMAT]

    def prepare(self, root: Path) -> None:
        if not self.is_complete(root):
            write_synthetic_dataset(root, self.num_images, self.picture_size, self.data_seed)

    def read(self, root: Path) -> list:
        self.prepare(root)
        return super().read(root)


class SyntheticAIGI(MOSFolder):
    """A MOSFolder that generates itself (in ``prepare_data``) when ``root`` holds no complete copy.

    Args:
        num_images: how many pictures to generate.
        picture_size: their width and height in pixels.
        data_seed: the seed of the pictures and MOS (``seed`` is the split's).
    """

    reader: SyntheticReader

    def __init__(self, root: str, num_images: int = 200, picture_size: int = 64, data_seed: int = 0, **kwargs):
        super().__init__(root, **kwargs)
        self.reader = SyntheticReader(self.reader.metadata, self.reader.targets, num_images, picture_size, data_seed)
        self.num_images = num_images
        self.picture_size = picture_size
        self.data_seed = data_seed

    def prepare_data(self) -> None:
        self.reader.prepare(self.root)
        super().prepare_data()
