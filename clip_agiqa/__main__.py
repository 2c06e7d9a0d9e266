"""``python -m clip_agiqa ...`` is ``clip-agiqa ...`` (the benchmark starts its runs this way, with its own
interpreter)."""

from .cli import console

console()
