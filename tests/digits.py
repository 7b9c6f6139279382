"""A tiny learnable corpus for training tests: German digit words to English digit words."""

from __future__ import annotations

import random
from pathlib import Path

DE = "null eins zwei drei vier fuenf sechs sieben acht neun".split()
EN = "zero one two three four five six seven eight nine".split()


def write_digit_pairs(path: Path, count: int, seed: int) -> Path:
    """Write ``count`` TSV pairs of 3 to 6 digits (German TAB English), deterministic by ``seed``."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        digits = [rng.randrange(10) for _ in range(rng.randint(3, 6))]
        lines.append(" ".join(DE[d] for d in digits) + "\t" + " ".join(EN[d] for d in digits))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
