"""Accuracy under load: how a served output is compared with its reference, and what counts.

The reference is onnxruntime in-process on the same input (computed once per distinct sample,
before the run). A served tensor matches when its name, dtype and shape are the reference's and
every value is within the tolerance of its dtype:

- floats: |got − ref| ≤ atol + rtol·|ref| elementwise (numpy.isclose's rule), NaN equal to NaN.
  The tolerance is loose enough for a different ORT build (the official Triton image's ORT may
  use other kernels or thread splits, so sums are reordered: a few ULPs, more for FP16) and tight
  enough that a wrong answer (a corrupted value, another sample's output) cannot pass.
- integers and bools: exact. Detection models emit their boxes after NMS in the graph; a near-tie
  in scores could, on another ORT build, swap two detections or drop one at the threshold: that
  shows as a "value mismatch" (or "shape mismatch" for a changed count) and is reported, never
  hidden: the embedded backend runs the same ORT as the reference and is bit-identical.

Mismatches are counted per kind; any one makes the run INVALID (rules.validity's OUTPUTS_MATCH).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

MISSING_OUTPUT = "missing output"
UNEXPECTED_OUTPUT = "unexpected output"
DTYPE_MISMATCH = "dtype mismatch"
SHAPE_MISMATCH = "shape mismatch"
VALUE_MISMATCH = "value mismatch"
UNDECODABLE = "undecodable response"


@dataclass(frozen=True)
class Tolerance:
    """Elementwise |got − ref| ≤ atol + rtol·|ref|; (0, 0) = exact."""

    rtol: float
    atol: float

    def describe(self) -> str:
        if self.rtol == 0 and self.atol == 0:
            return "exact"
        return f"rtol {self.rtol:g}, atol {self.atol:g}"


# Per dtype: FP32 allows ~1e3 ULPs relative plus an absolute floor for values near zero (sums
# of products reordered by other kernels); FP16 has 10 mantissa bits, so ~2 ULPs at 1e-3.
TOLERANCE_BY_DTYPE: dict[str, Tolerance] = {
    "float64": Tolerance(1e-7, 1e-9),
    "float32": Tolerance(1e-4, 1e-5),
    "float16": Tolerance(2e-3, 1e-3),
}
EXACT = Tolerance(0.0, 0.0)


def tolerance_for(dtype: np.dtype | str) -> Tolerance:
    """The tolerance of one output's dtype: float rules above, exact for everything else."""
    return TOLERANCE_BY_DTYPE.get(np.dtype(dtype).name, EXACT)


def compare(reference: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray]) -> str | None:
    """The first mismatch kind between a served answer and its reference, None when they agree."""
    for name, ref in reference.items():
        if name not in got:
            return MISSING_OUTPUT
        value = np.asarray(got[name])
        if value.dtype != ref.dtype:
            return DTYPE_MISMATCH
        if value.shape != ref.shape:
            return SHAPE_MISMATCH
        tolerance = tolerance_for(ref.dtype)
        if tolerance == EXACT:
            if not np.array_equal(value, ref):
                return VALUE_MISMATCH
        elif not np.allclose(value, ref, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True):
            return VALUE_MISMATCH
    if set(got) - set(reference):
        return UNEXPECTED_OUTPUT
    return None


def detection_probability(rate: float, corrupt_share: float, queries: int) -> float:
    """P(at least one corrupted answer is sampled) when `corrupt_share` of `queries` answers are
    wrong and each query is sampled independently with probability `rate`."""
    return 1.0 - (1.0 - rate * corrupt_share) ** queries


def queries_to_detect(rate: float, corrupt_share: float, miss: float) -> int:
    """Queries needed so that a corruption of `corrupt_share` is missed with probability < miss."""
    return math.ceil(math.log(miss) / math.log1p(-rate * corrupt_share))


@dataclass(frozen=True)
class OutputCheck:
    """What the output check of one run found.

    sampled: queries chosen at schedule time; checked: those answered and compared (a sampled
    query that failed or was never answered is counted by the run's errors, not here).
    """

    rate: float
    seed: int
    sampled: int
    checked: int
    mismatches: dict[str, int] = field(default_factory=dict)
    tolerances: dict[str, str] = field(default_factory=dict)  # output name -> described
    reference: str = ""  # what computed the references, e.g. "onnxruntime 1.20.1 in-process"
    first_mismatch: str = ""  # one example, for the reason line

    @property
    def mismatched(self) -> int:
        return sum(self.mismatches.values())

    @property
    def passed(self) -> bool:
        return self.mismatched == 0

    def detail(self) -> str:
        tolerances = ", ".join(f"{k}: {v}" for k, v in self.tolerances.items()) or "none"
        head = (
            f"output check: {self.checked} of {self.sampled} sampled answers compared "
            f"(rate {self.rate:g}, seed {self.seed}) with {self.reference}; tolerance {tolerances}"
        )
        if self.passed:
            return head + "; all match"
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.mismatches.items()))
        example = f" (first: {self.first_mismatch})" if self.first_mismatch else ""
        return f"{head}; {self.mismatched} mismatch: {kinds}{example}"

    def to_dict(self) -> dict[str, object]:
        return {
            "rate": self.rate,
            "seed": self.seed,
            "sampled": self.sampled,
            "checked": self.checked,
            "mismatched": self.mismatched,
            "mismatches_by_kind": dict(self.mismatches),
            "tolerance": dict(self.tolerances),
            "reference": self.reference,
            "first_mismatch": self.first_mismatch,
            "passed": self.passed,
        }
