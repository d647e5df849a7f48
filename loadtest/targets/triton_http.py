"""Triton over HTTP/REST (KServe v2); each sample's complete request is built once.

Metadata comes from tritonclient.http.aio. The inference path writes prebuilt requests (bodies from
tritonclient's own `generate_request_body`, binary tensors) through http_wire's keep-alive pool,
which never caps connections, so an open-loop burst is never throttled by the client (a cap would
quietly turn the test into a closed loop). `start_infer` is the runner's callback path: no task,
no future, no response object per query.

TLS and headers (see transport.py) apply to both: the pool's connections are TLS connections, and
the headers are part of each prebuilt request. A 401 / 403 is the error kind `unauthenticated` /
`permission-denied`; on the first requests (open, warm-up) it stops the run with one line.
`timeout_s` is each query's deadline (http_wire enforces it); opening, metadata and the warm-up
query get `setup_timeout` (max(30 s, timeout_s)), so a short --timeout still starts. With
`server_timeout_s` every load request carries Triton's "timeout" parameter (µs); the warm-up and
`infer_outputs` requests do not, so a tight server deadline cannot fail the setup.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import aiohttp
import numpy as np
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from tritonclient.utils import InferenceServerException

from loadtest.core.records import TIMEOUT
from loadtest.core.settings import SharedMemoryKind
from loadtest.core.target import (
    NUMPY_TO_TRITON,
    Done,
    Kept,
    ModelSpec,
    Parts,
    Sample,
    TargetCapabilities,
    Written,
)
from loadtest.errors import TargetError
from loadtest.targets.shared_memory import SystemRegions
from loadtest.targets.transport import (
    AUTH_KIND_BY_HTTP_STATUS,
    auth_refusal,
    explain_tls_failure_async,
    http_client,
    plaintext_hint,
    ssl_context,
)
from loadtest.targets.triton_common import (
    DEFAULT_HTTP_PORT,
    TritonTargetBase,
    error_kind,
    http_error_message,
    model_spec_from_config,
    refuse_decoupled,
)
from loadtest.wire.http_wire import WirePool, build_request

_HEADER_LENGTH = "Inference-Header-Content-Length"
WARM_CONNECTIONS = 8
LIVE_CHECK_S = 5.0  # the liveness check's least deadline, as the gRPC target's


def _outcome(status: int, body: bytes, error: str | None) -> str | None:
    """None for a 200, else the short error kind of what went wrong."""
    if error is not None:
        return error if error == TIMEOUT else error_kind("http", error)
    if status != 200:
        return AUTH_KIND_BY_HTTP_STATUS.get(status) or error_kind(
            f"http {status}", http_error_message(body)
        )
    return None


def _status(exc: InferenceServerException) -> int:
    try:
        return int(exc.status() or 0)
    except ValueError:
        return 0


class TritonHttpTarget(TritonTargetBase):
    _DEFAULT_PORT = DEFAULT_HTTP_PORT

    def _init_own(self) -> None:
        """This target's own state, after the settings every Triton target takes."""
        self._path = (
            f"/v2/models/{self.model}"
            + (f"/versions/{self.version}" if self.version else "")
            + "/infer"
        )
        self._pool: WirePool | None = None
        self._requests: list[bytes] = []  # the load path's, with the server timeout if any
        self._plain: list[bytes] = []  # without it: warm-up and infer_outputs
        # --check-outputs' sampled queries: as the load path's, but every output comes back in
        # the body (binary), never through shared memory a later query could overwrite.
        self._kept: list[bytes] = []
        self._shm: SystemRegions | None = None
        self._outputs: list[httpclient.InferRequestedOutput] | None = None

    @property
    def capabilities(self) -> TargetCapabilities:
        """Callback sends and counted connection waits (http_wire's pool), system shared memory,
        and Triton's statistics."""
        return TargetCapabilities(
            callback_send=True,
            counts_connection_waits=True,
            keeps_outputs=True,
            shared_memory=frozenset({SharedMemoryKind.SYSTEM}),
            triton=self._triton_endpoint("http"),
        )

    def use_shared_memory(self, kind: SharedMemoryKind, tag: str) -> None:
        """Send inputs and receive outputs through registered system shared memory."""
        if kind is not SharedMemoryKind.SYSTEM:
            raise TargetError(f"the HTTP target has no {kind.value} shared memory")
        self._shm = SystemRegions(tag)

    @property
    def connection_waits(self) -> int:
        """Queries that found no idle connection and waited for one (see http_wire)."""
        return self._pool.waited if self._pool is not None else 0

    @property
    def transparent_retries(self) -> int:
        return 0

    def _admin(self) -> aiohttpclient.InferenceServerClient:
        return http_client(self.url, self.credentials, conn_timeout=self.setup_timeout_s)

    @property
    def description(self) -> str:
        return self._describe("https" if self.credentials.tls is not None else "http")

    def _refused(self, exc: InferenceServerException) -> TargetError | None:
        """The one-line error for a refused credential, else None."""
        kind = AUTH_KIND_BY_HTTP_STATUS.get(_status(exc))
        return TargetError(auth_refusal(self.url, kind, f"HTTP {_status(exc)}")) if kind else None

    async def _unreachable(self, exc: BaseException) -> TargetError:
        """The one line for a server that did not answer: over TLS, why the handshake fails;
        in plaintext, whether the server wants TLS."""
        host, _, port = self.url.rpartition(":")
        host = host.strip("[]")
        text = exc.message() if isinstance(exc, InferenceServerException) else str(exc)
        text = text or type(exc).__name__  # an aiohttp timeout's str() is ''
        tls = self.credentials.tls
        if tls is not None:
            reason = await explain_tls_failure_async(host, int(port), tls, ("http/1.1",))
            return TargetError(f"cannot reach Triton over HTTPS at {self.url}: {reason or text}")
        hint = await plaintext_hint(host, int(port), ("http/1.1",), "https")
        return TargetError(f"cannot reach Triton over HTTP at {self.url}: {text}{hint}")

    async def open(self) -> ModelSpec:
        client = self._admin()
        try:
            try:
                # A server that accepts connections but never answers: a reason within
                # max(--timeout, 5 s), not an empty one after the 30 s setup deadline (#26).
                live_s = min(max(self.timeout_s, LIVE_CHECK_S), self.setup_timeout_s)
                try:
                    await asyncio.wait_for(client.is_server_live(), live_s)
                except asyncio.TimeoutError:
                    raise await self._unreachable(
                        OSError(f"no answer to the liveness check within {live_s:g} s")
                    ) from None
                metadata = await client.get_server_metadata()
                self._server_version = str(metadata.get("version", ""))
            except InferenceServerException as exc:
                raise (self._refused(exc) or await self._unreachable(exc)) from None
            except (aiohttp.ClientError, OSError) as exc:
                raise await self._unreachable(exc) from None
            try:
                config = await client.get_model_config(self.model, self.version)
                ready = await client.is_model_ready(self.model, self.version)
            except InferenceServerException as exc:
                refused = self._refused(exc)
                if refused:
                    raise refused from None
                raise TargetError(f"model {self.model!r} at {self.url}: {exc.message()}") from None
        finally:
            await client.close()
        if not ready:
            raise TargetError(f"model {self.model!r} at {self.url} is not ready")
        host, _, port = self.url.rpartition(":")
        tls = self.credentials.tls
        self._pool = WirePool(
            host.strip("[]"),
            int(port),
            self.timeout_s,
            ssl=ssl_context(tls) if tls is not None else None,
        )
        refuse_decoupled(config, self.model, "HTTP /infer")
        self._spec = model_spec_from_config(config, self.version)
        return self._spec

    async def _use_shared_memory(self, shm: SystemRegions, samples: Sequence[Sample]) -> None:
        assert self._spec is not None
        shm.layout(samples, self._spec)
        client = self._admin()
        try:
            await shm.register(
                lambda name, key, size: client.register_system_shared_memory(name, key, size)
            )
        finally:
            await client.close()
        self._outputs = shm.requested_outputs(httpclient.InferRequestedOutput)

    async def prepare(self, samples: Sequence[Sample]) -> None:
        assert self._pool is not None, "open() first"
        if self._shm is not None:
            await self._use_shared_memory(self._shm, samples)
        self._requests = []
        self._plain = []
        self._kept = []
        assert self._spec is not None
        in_body = [
            httpclient.InferRequestedOutput(t.name, binary_data=True) for t in self._spec.outputs
        ]
        for k, sample in enumerate(samples):
            inputs = []
            for name, tensor in sample.items():
                datatype = NUMPY_TO_TRITON.get(tensor.dtype.name, "BYTES")
                infer_input = httpclient.InferInput(name, list(tensor.shape), datatype)
                if self._shm is not None:
                    self._shm.bind_input(infer_input, k, name)
                else:
                    infer_input.set_data_from_numpy(tensor, binary_data=True)
                inputs.append(infer_input)
            plain = self._request(inputs, self._outputs)
            self._plain.append(plain)
            if self.server_timeout_us is None:
                self._requests.append(plain)
            else:
                self._requests.append(self._request(inputs, self._outputs, self.server_timeout_us))
            self._kept.append(self._request(inputs, in_body, self.server_timeout_us))
        try:
            await self._pool.warm(WARM_CONNECTIONS)
        except OSError as exc:
            raise await self._unreachable(exc) from None
        if self._requests:
            try:
                await self.infer_outputs(0)
            except InferenceServerException as exc:
                refused = self._refused(exc)
                if refused:
                    raise refused from None
                raise TargetError(
                    f"model {self.model!r} rejected the inputs: {exc.message()}"
                ) from None

    def _request(
        self,
        inputs: list[httpclient.InferInput],
        outputs: list[httpclient.InferRequestedOutput] | None = None,
        server_timeout_us: int | None = None,
    ) -> bytes:
        body, json_size = httpclient.InferenceServerClient.generate_request_body(
            inputs, outputs=outputs, timeout=server_timeout_us
        )
        headers = {"Content-Type": "application/octet-stream"}
        if json_size is not None:
            headers[_HEADER_LENGTH] = str(json_size)
        headers.update(self.credentials.header_dict())
        return build_request(self.url, self._path, bytes(body), headers)

    def start_infer(self, sample_index: int, done: Done, written: Written | None = None) -> None:
        """Send a prepared sample; `done(error kind or None)` runs when the answer is in, and
        `written()` when a request that waited for a free connection is finally written."""
        assert self._pool is not None, "open() first"
        self._pool.submit(
            self._requests[sample_index],
            lambda status, body, error, _headers: done(_outcome(status, body, error)),
            written=written,
        )

    def start_parts(self, sample_index: int, parts: Parts, written: Written | None = None) -> None:
        raise NotImplementedError("Triton's HTTP inference answers whole, not in parts")

    async def _exchange(
        self, request: bytes, timeout_s: float | None = None
    ) -> tuple[int, bytes, str | None, dict[bytes, bytes]]:
        assert self._pool is not None, "open() first"
        future: asyncio.Future[tuple[int, bytes, str | None, dict[bytes, bytes]]]
        future = asyncio.get_running_loop().create_future()

        def finish(
            status: int, body: bytes, error: str | None, headers: dict[bytes, bytes]
        ) -> None:
            if not future.done():
                future.set_result((status, body, error, headers))

        self._pool.submit(request, finish, keep_headers=True, timeout_s=timeout_s)
        return await future

    async def infer(self, sample_index: int) -> str | None:
        status, body, error, _ = await self._exchange(self._requests[sample_index])
        return _outcome(status, body, error)

    async def infer_outputs(self, sample_index: int) -> dict[str, np.ndarray]:
        return await self.outputs_of(self._plain[sample_index])

    async def infer_kept(self, sample_index: int) -> tuple[str | None, Kept]:
        """A load query whose body is kept: decoding waits until after the run."""
        status, body, error, headers = await self._exchange(self._kept[sample_index])
        outcome = _outcome(status, body, error)
        if outcome is not None:
            return outcome, None
        return None, (body, headers.get(_HEADER_LENGTH.lower().encode()))

    def decode_kept(self, kept: Kept) -> dict[str, np.ndarray]:
        if not isinstance(kept, tuple) or len(kept) != 2:
            raise ValueError("not an answer of the HTTP target")
        body, header_length = kept
        try:
            result = httpclient.InferenceServerClient.parse_response_body(
                body, header_length=int(header_length) if header_length else None
            )
            response = result.get_response()
            return {o["name"]: result.as_numpy(o["name"]) for o in response.get("outputs", [])}
        except Exception as exc:
            raise ValueError(f"cannot decode the HTTP answer: {exc}") from None

    async def outputs_of(self, request: bytes) -> dict[str, np.ndarray]:
        """Send one prebuilt request and decode its outputs (raises InferenceServerException);
        with the setup deadline, as it serves warm-ups and correctness checks."""
        status, body, error, headers = await self._exchange(request, self.setup_timeout_s)
        if error is not None:
            raise InferenceServerException(error)
        if status != 200:
            raise InferenceServerException(http_error_message(body), status=str(status))
        if self._shm is not None:
            return self._shm.read_outputs()
        header_length = headers.get(_HEADER_LENGTH.lower().encode())
        result = httpclient.InferenceServerClient.parse_response_body(
            body, header_length=int(header_length) if header_length else None
        )
        response = result.get_response()
        return {out["name"]: result.as_numpy(out["name"]) for out in response.get("outputs", [])}

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._shm is not None:
            client = self._admin()
            try:
                await self._shm.release(client.unregister_system_shared_memory)
            finally:
                await client.close()
