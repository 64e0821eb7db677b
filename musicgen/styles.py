"""The built-in styles: the models that ship in checkpoints/, each with the music it learned from.

checkpoints/styles.json names them, in the order they are offered:
{"bach": {"title": "Bach chorales", "music": "samples/bach"}, ...}; the model of style NAME is
checkpoints/NAME/. A style whose model is not trained (no weights) is not offered.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from musicgen.boundary import WEIGHTS_FILE

REPOSITORY = Path(__file__).resolve().parent.parent
STYLES_FILE = REPOSITORY / "checkpoints" / "styles.json"
STYLE_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # also the model's folder name


@dataclass(frozen=True)
class Style:
    """A built-in style to compose in."""

    name: str  # e.g. "string-quartets", for the command line
    title: str  # e.g. "String quartets", for the page
    model: Path  # its model folder
    music: Path  # the folder of MIDI files it learned from


def built_in_styles(styles_file: Path = STYLES_FILE) -> list[Style]:
    """The styles whose models are trained, in the order of the styles file."""
    root = Path(styles_file).parent.parent
    described = json.loads(Path(styles_file).read_text())
    styles = [_style(name, entry, root) for name, entry in described.items()]
    return [style for style in styles if (style.model / WEIGHTS_FILE).is_file()]


def _style(name: str, entry: dict, root: Path) -> Style:
    """One entry of the styles file, checked (it ships with the code, so a bad entry is a bug)."""
    if not STYLE_NAME.fullmatch(name) or set(entry) != {"title", "music"}:
        raise ValueError(f"{STYLES_FILE.name}: the entry {name!r} needs a lowercase name, a title and a music folder")
    return Style(name, str(entry["title"]), root / "checkpoints" / name, root / entry["music"])


def find_style(name: str, styles_file: Path = STYLES_FILE) -> Style:
    """The built-in style of this name; ValueError naming the styles there are."""
    styles = built_in_styles(styles_file)
    for style in styles:
        if style.name == name:
            return style
    raise ValueError(f"there is no built-in style {name!r}; the styles are: {', '.join(s.name for s in styles)}")
