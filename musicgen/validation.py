"""Range checks for the settings dataclasses and the environment: one plain ValueError that names the field."""

from __future__ import annotations


def check_ranges(settings: object, **ranges: tuple[float, float]) -> None:
    """Raise ValueError for the first field outside its (low, high); whole-number bounds want a whole number."""
    for name, (low, high) in ranges.items():
        value = getattr(settings, name)
        whole = isinstance(low, int) and isinstance(high, int)
        kind = int if whole else int | float
        if isinstance(value, bool) or not isinstance(value, kind) or not low <= value <= high:
            raise ValueError(f"{name} must be in range {low}..{high}, got {value!r}")


def number_from_environment(variable: str, text: str, allowed: tuple[float, float]) -> float:
    """The number an environment variable holds, or ValueError naming the variable and its range."""
    low, high = allowed
    whole = isinstance(low, int) and isinstance(high, int)
    try:
        value = (int if whole else float)(text.strip())
    except ValueError:
        value = None
    if value is None or not low <= value <= high:  # also refuses "nan"
        kind, style = ("a whole number", ",") if whole else ("a number", ",g")
        raise ValueError(f"{variable} must be {kind} from {low:{style}} to {high:{style}}, got {text!r}")
    return value
