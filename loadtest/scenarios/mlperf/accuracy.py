"""--check-outputs: reference outputs before the run, and the comparison of kept answers after it.

References come from onnxruntime in this process (targets/native.py, the model's own ONNX file
and config in the repository), computed once per distinct sample of the library before the clock
starts, so the run pays nothing for them. The fake target's reference is its known function.
The queries to check are chosen with the schedule (core/schedule.check_mask); their raw answers
are kept by the runner and only decoded and compared here, after the run: the hot path does no
numpy work for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from loadtest.core.schedule import check_mask
from loadtest.core.target import Sample, Target
from loadtest.engine.runner import RunOutcome
from loadtest.rules.output_check import (
    UNDECODABLE,
    OutputCheck,
    compare,
    tolerance_for,
)

References = list[dict[str, np.ndarray]]


async def native_references(
    repository: Path, model: str, samples: Sequence[Sample]
) -> tuple[References, str]:
    """Each sample's outputs from onnxruntime in-process, and what computed them."""
    from loadtest.targets.native import NativeTarget

    native = NativeTarget.from_repository(repository, model)
    await native.open()
    try:
        await native.prepare(samples)
        references = [await native.infer_outputs(k) for k in range(len(samples))]
    finally:
        await native.close()
    return references, native.description


def fake_references(samples: Sequence[Sample]) -> tuple[References, str]:
    """The fake target's correct answers (OUTPUT0 = 2 × INPUT0)."""
    from loadtest.targets.fake import reference_outputs

    return [reference_outputs(s) for s in samples], "the fake model's function (2 × INPUT0)"


async def references_for(
    url: str, repository: Path, model: str, samples: Sequence[Sample]
) -> tuple[References, str]:
    """The references for a run's target: the fake's function for fake://, else onnxruntime."""
    if url.startswith("fake://"):
        return fake_references(samples)
    return await native_references(repository, model, samples)


def verify(
    outcome: RunOutcome,
    target: Target,
    references: References,
    rate: float,
    seed: int,
    reference: str,
) -> OutputCheck:
    """Decode every kept answer and compare it with its sample's reference."""
    records = outcome.records
    sampled = int((check_mask(len(records), rate, seed) & records.issued).sum())
    mismatches: dict[str, int] = {}
    first = ""
    for query in sorted(outcome.kept):
        sample = int(records.sample_index[query])
        try:
            got = target.decode_kept(outcome.kept[query])
            kind = compare(references[sample], got)
        except ValueError as exc:
            kind, detail = UNDECODABLE, str(exc)
        else:
            detail = ""
        if kind is not None:
            mismatches[kind] = mismatches.get(kind, 0) + 1
            if not first:
                first = f"query {query}, sample {sample}: {kind}" + (
                    f" ({detail})" if detail else ""
                )
    tolerances = {
        name: tolerance_for(tensor.dtype).describe()
        for name, tensor in (references[0].items() if references else ())
    }
    return OutputCheck(
        rate=rate,
        seed=seed,
        sampled=sampled,
        checked=len(outcome.kept),
        mismatches=mismatches,
        tolerances=tolerances,
        reference=reference,
        first_mismatch=first,
    )
