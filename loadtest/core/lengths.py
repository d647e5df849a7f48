"""Token-length laws for synthetic prompts and answers: `--input-tokens` / `--output-tokens`.

A law is named "KIND:PARAMETERS" and drawn, seeded, as whole numbers of tokens:

- `fixed:N`           every length N;
- `uniform:LO:HI`     integers uniform on [LO, HI], both ends included;
- `normal:MEAN:SD`    a normal draw rounded to the nearest integer, then **clipped** to
                      [1, MAX_TOKENS]: with SD large beside MEAN the clipped mass lands on 1, so
                      the drawn mean is above MEAN (`describe` says so);
- `lognormal:MEAN:SD` MEAN and SD are the mean and standard deviation **of the lengths
                      themselves** (not of the underlying normal): σ² = ln(1 + SD²/MEAN²),
                      μ = ln(MEAN) − σ²/2, then rounded and clipped to [1, MAX_TOKENS] as above.

Every length is ≥ 1 (an empty prompt or a `max_tokens` of 0 is no request) and ≤ MAX_TOKENS.
Parameters that are not finite, negative, or outside those bounds are one SettingsError line.
Pure: the caller hands in the seeded generator (engine/prompts draws each law from its own
stream of the run's sample seed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from loadtest.errors import SettingsError

MAX_TOKENS = 1_000_000  # one prompt or answer; far beyond any served context window
KINDS = {
    "fixed": "fixed:N",
    "uniform": "uniform:LO:HI",
    "normal": "normal:MEAN:SD",
    "lognormal": "lognormal:MEAN:SD",
}
CHOICES = ", ".join(KINDS.values())


@dataclass(frozen=True)
class LengthLaw:
    """One law of token lengths: `kind` (a KINDS key) and its two numbers (`b` unused by
    fixed). Built by `length_law_named`, which checks them."""

    kind: str
    a: float
    b: float = 0.0

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """`count` lengths (int64, each in [1, MAX_TOKENS]) from `rng`."""
        if self.kind == "fixed":
            return np.full(count, int(self.a), dtype=np.int64)
        if self.kind == "uniform":
            return rng.integers(int(self.a), int(self.b) + 1, size=count, dtype=np.int64)
        if self.kind == "normal":
            values = rng.normal(self.a, self.b, size=count)
        else:
            mu, sigma = lognormal_parameters(self.a, self.b)
            values = rng.lognormal(mu, sigma, size=count)
        return np.clip(np.rint(values), 1, MAX_TOKENS).astype(np.int64)

    @property
    def spec(self) -> str:
        """The law as it is written on the command line."""
        if self.kind == "fixed":
            return f"fixed:{int(self.a)}"
        if self.kind == "uniform":
            return f"uniform:{int(self.a)}:{int(self.b)}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"

    def describe(self) -> str:
        """The law in words, with its parameterisation and clipping."""
        if self.kind == "fixed":
            return f"fixed {int(self.a)}"
        if self.kind == "uniform":
            return f"uniform on [{int(self.a)}, {int(self.b)}]"
        what = "normal" if self.kind == "normal" else "lognormal (mean and SD of the lengths)"
        return f"{what} mean {self.a:g} SD {self.b:g}, rounded, clipped to [1, {MAX_TOKENS:,}]"


def lognormal_parameters(mean: float, sd: float) -> tuple[float, float]:
    """(μ, σ) of the underlying normal for lengths of this mean and standard deviation."""
    sigma2 = math.log1p((sd / mean) ** 2)
    return math.log(mean) - sigma2 / 2, math.sqrt(sigma2)


def _number(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"length law {spec!r}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise SettingsError(f"length law {spec!r}: {text!r} is not a finite number")
    if value < 0:
        raise SettingsError(f"length law {spec!r}: {text!r} is negative")
    if value > MAX_TOKENS:
        raise SettingsError(f"length law {spec!r}: {text!r} is over {MAX_TOKENS:,} tokens")
    return value


def _whole(value: float, text: str, spec: str) -> int:
    if value != math.floor(value) or value < 1:
        raise SettingsError(f"length law {spec!r}: {text!r} is not a whole number ≥ 1")
    return int(value)


def length_law_named(text: str) -> LengthLaw:
    """The law `text` names ("fixed:128", "uniform:100:200", "normal:512:128",
    "lognormal:512:256"), or one clear SettingsError."""
    spec = text.strip().lower()
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise SettingsError(f"unknown length law {text!r}: choose one of {CHOICES}")
    parts = rest.split(":") if rest else []
    wanted = 1 if kind == "fixed" else 2
    if len(parts) != wanted:
        raise SettingsError(f"length law {text!r}: write it {KINDS[kind]}")
    numbers = [_number(p.strip(), text) for p in parts]
    if kind == "fixed":
        return LengthLaw(kind, _whole(numbers[0], parts[0], text))
    if kind == "uniform":
        low, high = (_whole(n, p, text) for n, p in zip(numbers, parts, strict=True))
        if low > high:
            raise SettingsError(f"length law {text!r}: LO {low} is above HI {high}")
        return LengthLaw(kind, low, high)
    mean, sd = numbers
    if mean <= 0:
        raise SettingsError(f"length law {text!r}: MEAN must be > 0")
    return LengthLaw(kind, mean, sd)
