"""The gRPC stream target's probe before load (`prepare`): a stream whose connection closed under
it is tried again on a fresh stream, and named a lost connection if it keeps closing; an error the
model answers is the inputs' fault at once. Seen in CI: an embedded Triton's stream reported
`UNAVAILABLE: Stream removed (Socket closed)` before the first answer, which the probe used to
call "rejected the inputs"."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from loadtest.core.target import ModelSpec
from loadtest.errors import TargetError
from loadtest.targets import triton_stream
from loadtest.targets.triton_stream import TritonStreamTarget

LOST = "grpc stream UNAVAILABLE: Stream removed (Socket closed)"
SAMPLE = {"text_input": np.array([b"one two"], dtype=object), "max_tokens": np.array([4])}


class ScriptedProbe(TritonStreamTarget):
    """The target with its one probe call answering from a script: an error text, or None."""

    def __init__(self, script: list[str | None]) -> None:
        # grpc.aio opens no connection before the first query, the wire client would: the
        # probe's logic is the same for both, and nothing listens here.
        super().__init__("127.0.0.1:1", "m", load_client="grpcio")
        self._spec = ModelSpec("m", "", 0, (), ())
        self.script = list(script)
        self.calls = 0

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        self.calls += 1
        error = self.script.pop(0)
        if error is not None:
            raise ValueError(error)
        return {}


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(triton_stream, "PROBE_RETRY_S", 0.0)


def test_a_connection_lost_before_the_first_answer_is_tried_again():
    target = ScriptedProbe([LOST, LOST, None])
    asyncio.run(target.prepare([SAMPLE]))
    assert target.calls == 3


def test_a_connection_that_keeps_closing_is_named_as_such_not_as_bad_inputs():
    target = ScriptedProbe([LOST] * triton_stream.PROBE_ATTEMPTS)
    with pytest.raises(TargetError, match="connection was lost 3 times") as caught:
        asyncio.run(target.prepare([SAMPLE]))
    assert "rejected" not in str(caught.value)
    assert target.calls == triton_stream.PROBE_ATTEMPTS


def test_an_error_the_model_answers_is_the_inputs_fault_at_once():
    target = ScriptedProbe(["grpc stream: unexpected inference input 'x'", None])
    with pytest.raises(TargetError, match="rejected the inputs"):
        asyncio.run(target.prepare([SAMPLE]))
    assert target.calls == 1
