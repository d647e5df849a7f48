"""An .npz archive (numpy.savez): one array per input name, axis 0 = sample."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from loadtest.core.target import ModelSpec
from loadtest.engine.inputs.checks import UserTensors, check_names, data_error


def read_npz(path: Path, model: ModelSpec) -> UserTensors:
    if not zipfile.is_zipfile(path):  # np.load would call anything else "pickled data"
        raise data_error(
            path,
            "is not an .npz archive (one array per input name, axis 0 = sample, as written by "
            "numpy.savez)",
        )
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise data_error(path, f"cannot read it: {exc}") from None
    check_names(path, model, list(arrays))
    scalars = [t.name for t in model.inputs if arrays[t.name].ndim == 0]
    if scalars:
        raise data_error(
            path,
            f"input(s) {', '.join(scalars)} hold a single value (a 0-d array); axis 0 must "
            "index the samples",
        )
    return {t.name: list(arrays[t.name]) for t in model.inputs}
