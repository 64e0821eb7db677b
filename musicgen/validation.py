"""Range checks for the settings dataclasses: one plain ValueError that names the field."""

from __future__ import annotations


def check_ranges(settings: object, **ranges: tuple[float, float]) -> None:
    """Raise ValueError for the first field outside its (low, high); whole-number bounds want a whole number."""
    for name, (low, high) in ranges.items():
        value = getattr(settings, name)
        whole = isinstance(low, int) and isinstance(high, int)
        kind = int if whole else int | float
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            raise ValueError(f"{name} must be in range {low}..{high}, got {value!r}")
