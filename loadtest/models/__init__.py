"""The benchmark model suite and the Triton model repository it lives in.

Generators write ONNX models with seeded random weights (nothing is downloaded) whose
architecture, shapes and cost are the real ones, scaled only where the name says so:

    tiny           MLP 16-64-16 — measures the load generator and the server, not a model
    resnet50       ResNet-50 v1.5 (MLPerf resnet50), faithful
    bert_l4_h256   BERT SQuAD at sequence 384, scaled to 4 layers / hidden 256
    bert_large     BERT-large SQuAD (MLPerf bert), faithful, 1.3 GB — built only on request
    dlrm_small     DLRM-v2 (MLPerf dlrm-v2), faithful but for 10 000-row embedding tables
    gpt_tiny_l2_d128  a GPT-2-style LLM decoder scaled to 2 layers / d_model 128, KV cache, its
                   BPE tokenizer trained at build; streamed by a decoupled Python-backend model

Each model gets a config.pbtxt written through Triton's own ModelConfig schema (and a
configs/gpu.pbtxt variant). The public API:

    SUITE[name] -> SuiteModel         what a model is, its serving settings, its latency bound
    build_repository(repo, names, seed, force, progress) -> list[BuildResult]
    write_configs(repo, names)        the configs alone (they are committed to git)
    check_repository(repo, names)     problems that would stop Triton loading the models
    scan_model(path), onnx_signature(model)   an ONNX file's tensors without reading its weights
    default_repository()              where the CLI looks when --repository is not given
    is_default_repository(path)       is it loadtest's own repository (the only one it builds into)

Exceptions: ModelBuildError (loadtest.errors), one line naming the model and the cause.
"""

from __future__ import annotations

from pathlib import Path

from loadtest.models.build import BuildResult, build_repository, write_configs
from loadtest.models.check import check_repository, onnx_signature
from loadtest.models.onnx_io import ScanError, scan_model
from loadtest.models.suite import (
    DEFAULT_BUILD,
    DEFAULT_SERVER_MODEL,
    DEFAULT_SERVER_QPS,
    SUITE,
    SuiteModel,
    TensorDecl,
)

# The repository committed beside the package source (a git checkout or an editable install).
SOURCE_REPOSITORY = Path(__file__).resolve().parent.parent.parent / "model_repository"


def default_repository() -> Path:
    """`./model_repository` when it exists (you run from a checkout or a project of your own),
    else the checkout's repository beside the package source, else `./model_repository`
    (to be created). Resolved on each call, not at import, because it depends on the cwd."""
    here = Path.cwd() / "model_repository"
    if here.is_dir():
        return here
    if SOURCE_REPOSITORY.is_dir():
        return SOURCE_REPOSITORY
    return here


def is_default_repository(path: Path) -> bool:
    """Is `path` loadtest's own model_repository/ (here or beside the source)? Suite models are
    built on demand only there: a repository the user names is never written into."""
    resolved = path.resolve()
    return resolved in {(Path.cwd() / "model_repository").resolve(), SOURCE_REPOSITORY}


__all__ = [
    "DEFAULT_BUILD",
    "DEFAULT_SERVER_MODEL",
    "DEFAULT_SERVER_QPS",
    "SOURCE_REPOSITORY",
    "SUITE",
    "BuildResult",
    "ScanError",
    "SuiteModel",
    "TensorDecl",
    "build_repository",
    "check_repository",
    "default_repository",
    "is_default_repository",
    "onnx_signature",
    "scan_model",
    "write_configs",
]
