"""Flag groups: a command takes its target, sample, output, client and access flags as one
parameter each, and builds TargetFlags, ClientSettings and the like in one place.

Why a decorator: typer reads a command's flags from `inspect.signature`, one parameter per flag.
`@takes_groups` gives typer the flat signature it needs and the command the groups: a parameter
annotated with a group (a frozen dataclass whose fields are options.py's aliases, each with its
default) stands for the group's fields, in field order; the command is called with the group
built. `Annotated[Group, take("url", min_queries=100)]` takes a group without some of its flags
(those keep the field's default) or with other defaults for them. A group may hold a group.
Every flag keeps its name, help text, default and place in --help: only the signature is composed.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import typer

from loadtest.commands import options
from loadtest.commands.common import (
    access_flags,
    error_rules,
    max_duration_ns,
    min_duration_ns,
    parse_shapes,
)
from loadtest.core.arrivals import ArrivalLaw, RenewalLaw, Timestamps, law_named
from loadtest.core.lengths import length_law_named
from loadtest.core.prompts import PromptSettings
from loadtest.core.settings import (
    AUTO_WORKERS,
    ClientSettings,
    LoopKind,
    Protocol,
    SharedMemoryKind,
)
from loadtest.core.stages import Staged, parse_stages
from loadtest.core.trace import ReplayOptions
from loadtest.core.units import NS_PER_S
from loadtest.engine.prompts.from_trace import trace_prompts
from loadtest.engine.traces import load_trace
from loadtest.scenarios.target_flags import AccessFlags, GrpcClientFlags, TargetFlags
from loadtest.server.deployment import EmbeddedMode

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Take:
    """How one command takes a group: `without` these flags, with these `defaults` instead."""

    without: tuple[str, ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()


def take(*without: str, **defaults: Any) -> Take:
    return Take(without, tuple(defaults.items()))


# --- the groups -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """Where the target is and how to find or start it."""

    url: options.UrlOption = None
    protocol: options.ProtocolOption = None  # None: not given (`wire` is grpc, or the stream)
    model_version: options.VersionOption = ""
    timeout: options.TimeoutOption = options.TIMEOUT_S
    server_timeout: options.ServerTimeoutOption = None
    embedded: options.EmbeddedOption = EmbeddedMode.AUTO
    repository: options.RepositoryOption = options.REPOSITORY
    grpc_client: options.GrpcClientOption = "wire"
    grpc_compression: options.GrpcCompressionOption = "none"
    grpc_keepalive: options.GrpcKeepaliveOption = 0.0
    connections: options.ConnectionsOption = 1
    ignore_eos: options.IgnoreEosOption = False

    @property
    def wire(self) -> Protocol:
        """The protocol asked for, grpc when none was (a decoupled model may then be streamed:
        scenarios/run.stream_if_decoupled)."""
        return self.protocol or Protocol.GRPC

    def grpc(self) -> GrpcClientFlags:
        return GrpcClientFlags(
            self.grpc_client.strip().lower(),
            self.grpc_compression.strip().lower(),
            self.grpc_keepalive,
            self.connections,
        )


@dataclass(frozen=True)
class SampleLibrary:
    """The in-memory sample library: its seed, its size, where real inputs come from, and a text
    model's prompts (lengths, the tokenizer, the prompts file's form, shared prefixes)."""

    sample_seed: options.SampleSeedOption = options.SAMPLE_SEED
    samples: options.SamplesOption = options.SAMPLES
    input_data: options.InputDataOption = None
    shape: options.ShapeOption = None
    input_tokens: options.InputTokensOption = None
    output_tokens: options.OutputTokensOption = None
    tokenizer: options.TokenizerOption = None
    input_format: options.InputFormatOption = None
    shared_prefix: options.SharedPrefixOption = False

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return parse_shapes(self.shape)

    def prompt_settings(self) -> PromptSettings:
        """The prompt flags, parsed once (a trace's lengths are `prompted_law`'s)."""
        return PromptSettings(
            input_tokens=None if self.input_tokens is None else length_law_named(self.input_tokens),
            output_tokens=(
                None if self.output_tokens is None else length_law_named(self.output_tokens)
            ),
            tokenizer=self.tokenizer,
            input_format=self.input_format,
            shared_prefix=self.shared_prefix,
        )


# How a command without prompts of its own takes SampleLibrary (a mix's entries carry theirs).
NO_PROMPT_FLAGS = ("input_tokens", "output_tokens", "tokenizer", "input_format", "shared_prefix")


@dataclass(frozen=True)
class Output:
    """Where the result goes and what is shown while it is measured."""

    output: options.OutputOption = None
    records: options.RecordsOption = False
    live: options.LiveOption = True
    force: options.ForceOption = False
    html: options.HtmlOption = None


@dataclass(frozen=True)
class Client:
    """The load generator: its processes, their event loop, Ray, shared memory."""

    workers: options.WorkersOption = AUTO_WORKERS
    loop: options.LoopOption = LoopKind.AUTO
    ray: options.RayOption = ""
    shared_memory: options.SharedMemoryOption = SharedMemoryKind.NONE

    def settings(self) -> ClientSettings:
        return ClientSettings(
            workers=self.workers,
            loop=self.loop,
            ray_address=self.ray,
            shared_memory=self.shared_memory,
        )


@dataclass(frozen=True)
class Access:
    """TLS and request headers: every command that talks to a server."""

    tls: options.TlsOption = False
    ca_cert: options.CaCertOption = None
    client_cert: options.ClientCertOption = None
    client_key: options.ClientKeyOption = None
    header: options.HeaderOption = None

    def flags(self) -> AccessFlags:
        return access_flags(self.tls, self.ca_cert, self.client_cert, self.client_key, self.header)


@dataclass(frozen=True)
class RunLength:
    """How long a run lasts: its minimum duration and query count, and its cap."""

    duration: options.DurationOption = None
    min_queries: options.MinQueriesOption = 1
    max_duration: options.MaxDurationOption = 0.0

    def settings_fields(self, mlperf: bool, default_ns: int) -> dict[str, Any]:
        return {
            "min_duration_ns": min_duration_ns(self.duration, mlperf, default_ns),
            "min_query_count": self.min_queries,
            "max_duration_ns": max_duration_ns(self.max_duration),
        }


@dataclass(frozen=True)
class Checks:
    """What else a run is judged by: the error budget and abort rule, outputs, a response cache."""

    error_budget: options.ErrorBudgetOption = None
    check_outputs: options.CheckOutputsOption = 0.0
    same_sample: options.SameSampleOption = False
    abort_on_error_rate: options.AbortOnErrorRateOption = None
    window: options.WindowOption = options.ABORT_WINDOW_S

    def settings_fields(self, mlperf: bool) -> dict[str, Any]:
        return {
            **error_rules(self.error_budget, self.abort_on_error_rate, self.window, mlperf),
            "check_outputs": self.check_outputs,
            "same_sample": self.same_sample,
        }


# A trace's window and idle-gap cap stay within a year: every time fits int64 nanoseconds.
MAX_TRACE_S = 366 * 24 * 3600.0
PLAYED_WHOLE = (
    "played whole: the minimum duration and query count do not apply (with --mlperf, LoadGen's "
    "do, and a shorter shape is INVALID)"
)


def _refused(flag: str, why: str) -> typer.BadParameter:
    """A usage error (exit 2, one line) naming `flag`."""
    return typer.BadParameter(why, param_hint=f"'{flag}'")


@dataclass(frozen=True)
class Arrival:
    """When queries are due: a law (Poisson by default), load stages, or a recorded trace.

    Stages and a trace are a whole run's shape: they set the rate (the profile's or the trace's
    mean, which sizes the workers and heads the report), so --qps is refused beside them, and
    they are played whole (PLAYED_WHOLE). Everything is checked before any load."""

    arrival: options.ArrivalOption = options.ARRIVAL
    stages: options.StagesOption = None
    trace: options.TraceOption = None
    trace_format: options.TraceFormatOption = None
    trace_unit: options.TraceUnitOption = None
    speedup: options.SpeedupOption = 1.0
    max_gap: options.MaxGapOption = None
    trace_start: options.TraceStartOption = 0.0
    trace_end: options.TraceEndOption = None

    @property
    def shaped(self) -> bool:
        """Stages or a trace: a shape played whole rather than a rate held for a duration."""
        return self.stages is not None or self.trace is not None

    def _trace_flags_given(self) -> list[str]:
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        names = ("trace_format", "trace_unit", "speedup", "max_gap", "trace_start", "trace_end")
        return ["--" + n.replace("_", "-") for n in names if getattr(self, n) != defaults[n]]

    def check(self, qps_given: bool, duration_given: bool, mlperf: bool) -> None:
        """Refuse, in one usage line, the flags that contradict each other."""
        if self.stages is not None and self.trace is not None:
            raise _refused("--stages", "not with --trace: a trace has its own times")
        if self.trace is not None and self.arrival != options.ARRIVAL:
            raise _refused("--arrival", "not with --trace: a trace plays its own times")
        if self.shaped and qps_given:
            shape = "--stages" if self.stages is not None else "--trace"
            how = "write the rates in the stages" if self.stages is not None else "use --speedup"
            raise _refused("--qps", f"not with {shape}, which sets the rate: {how}")
        if self.shaped and duration_given and not mlperf:
            shape = "--stages" if self.stages is not None else "--trace"
            raise _refused("--duration", f"not with {shape}, which is played whole")
        if self.trace is None and (given := self._trace_flags_given()):
            raise _refused(given[0], "only with --trace")
        for flag, value in (
            ("--max-gap", self.max_gap),
            ("--trace-start", self.trace_start),
            ("--trace-end", self.trace_end),
        ):
            if value is not None and not 0 <= value <= MAX_TRACE_S:
                raise _refused(flag, f"must be in [0, {MAX_TRACE_S:g}] s, got {value:g}")
        if self.max_gap is not None and self.max_gap <= 0:
            raise _refused("--max-gap", f"must be > 0 s, got {self.max_gap:g}")
        if self.trace_end is not None and self.trace_end <= self.trace_start:
            raise _refused("--trace-end", "must be after --trace-start")
        if not 1e-6 <= self.speedup <= 1e6:
            raise _refused("--speedup", f"must be in [1e-6, 1e6], got {self.speedup:g}")

    def refuse_beside(self, flag: str, why: str) -> None:
        """A usage error when any arrival flag is given beside `flag` (which sets arrivals)."""
        given = [
            *(["--arrival"] if self.arrival != options.ARRIVAL else []),
            *(["--stages"] if self.stages is not None else []),
            *(["--trace"] if self.trace is not None else []),
            *self._trace_flags_given(),
        ]
        if given:
            raise _refused(given[0], f"not with {flag}: {why}")

    def search_law(self) -> ArrivalLaw:
        """find-peak's law: a shape is searched over its speed-up, so --qps and --duration do not
        apply (the search sets the rate; a probe plays the shape whole)."""
        self.check(False, False, False)
        return self.law()

    def replay(self) -> ReplayOptions:
        def ns(seconds: float | None) -> int | None:
            return None if seconds is None else round(seconds * NS_PER_S)

        return ReplayOptions(
            speedup=self.speedup,
            max_gap_ns=ns(self.max_gap),
            start_ns=ns(self.trace_start) or 0,
            end_ns=ns(self.trace_end),
        )

    def law(self) -> ArrivalLaw:
        """The law the flags name (a malformed trace is one SettingsError line, exit 1)."""
        renewal = law_named(self.arrival)
        if self.stages is not None:
            assert isinstance(renewal, RenewalLaw)  # every law by name is one
            return Staged(renewal, parse_stages(self.stages))
        if self.trace is not None:
            return load_trace(self.trace, self.trace_format, self.trace_unit, self.replay())
        return renewal

    def settings_fields(
        self, qps: float | None, default_qps: float, run: RunLength, mlperf: bool, default_ns: int
    ) -> dict[str, Any]:
        """ServerSettings' rate, law and run length (RunLength's, or a shape's: played whole)."""
        self.check(qps is not None, run.duration is not None, mlperf)
        law = self.law()
        fields: dict[str, Any] = {"qps": default_qps if qps is None else qps, "arrival_law": law}
        fields.update(run.settings_fields(mlperf, default_ns))
        if isinstance(law, Staged):
            fields["qps"] = law.profile.mean_qps
        elif isinstance(law, Timestamps):
            fields["qps"] = law.mean_qps  # over its span (all at t = 0: its count)
        if self.shaped and not mlperf:
            # A trace's span is known: the check then says the whole trace was issued. A staged
            # schedule's last query depends on the seed and the rate (find-peak rescales it).
            span_ns = int(law.times_ns[-1]) if isinstance(law, Timestamps) else 0
            cap_ns: int = fields["max_duration_ns"]
            if cap_ns:  # --max-duration cuts the shape short, as asked
                span_ns = min(span_ns, cap_ns)
            fields.update(min_duration_ns=max(span_ns, 1), min_query_count=1)
        return fields


def prompted_law(
    samples: SampleLibrary, arrival: Arrival, law: ArrivalLaw, protocol: Protocol
) -> tuple[ArrivalLaw, PromptSettings]:
    """The law and the prompt settings together: on a streaming protocol (a text model's), a
    replayed trace with lengths shapes the prompts, one per row (engine/prompts/from_trace.py),
    and its rows then name their samples. --shared-prefix needs such a trace."""
    prompts = samples.prompt_settings()
    if isinstance(law, Timestamps) and protocol.streams and arrival.trace is not None:
        law, lengths = trace_prompts(
            law, arrival.trace, arrival.trace_format, prompts.shared_prefix
        )
        return law, dataclasses.replace(prompts, trace=lengths)
    if prompts.shared_prefix:
        raise _refused("--shared-prefix", "only with a Mooncake --trace on a streaming --protocol")
    return law, prompts


def target_flags(
    model: str,
    endpoint: Endpoint,
    samples: SampleLibrary,
    access: Access,
    shared_memory: SharedMemoryKind = SharedMemoryKind.NONE,
    prompts: PromptSettings | None = None,
) -> TargetFlags:
    """The one place a command's groups become TargetFlags (`prompts`: `prompted_law`'s, when
    the command plays a trace; else the prompt flags alone)."""
    if prompts is None:
        if samples.shared_prefix:
            raise _refused("--shared-prefix", "only with a Mooncake --trace")
        prompts = samples.prompt_settings()
    return TargetFlags(
        model=model,
        url=endpoint.url,
        protocol=endpoint.wire,
        model_version=endpoint.model_version,
        timeout_s=endpoint.timeout,
        embedded=endpoint.embedded,
        repository=endpoint.repository,
        input_data=samples.input_data,
        shapes=samples.shapes(),
        access=access.flags(),
        server_timeout_s=endpoint.server_timeout,
        shared_memory=shared_memory,
        grpc=endpoint.grpc(),
        ignore_eos=endpoint.ignore_eos,
        prompts=prompts,
        protocol_given=endpoint.protocol is not None,
    )


# --- the decorator --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Slot:
    """One parameter of the command: a flag (`group` None) or a group built from its flags."""

    name: str
    group: type | None = None
    parts: tuple[_Slot, ...] = ()


def _group_of(hint: Any) -> tuple[type | None, Take]:
    """(the group class, how it is taken) when `hint` is a group, else (None, Take())."""
    taken = Take()
    if typing.get_origin(hint) is typing.Annotated:
        taken = next((m for m in hint.__metadata__ if isinstance(m, Take)), taken)
        hint = typing.get_args(hint)[0]
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint, taken
    return None, taken


def _expand(name: str, hint: Any, default: Any, flat: dict[str, inspect.Parameter]) -> _Slot:
    group, taken = _group_of(hint)
    if group is None:
        if name in flat:
            raise TypeError(f"two flags are called {name!r}")
        flat[name] = inspect.Parameter(
            name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint
        )
        return _Slot(name)
    hints = typing.get_type_hints(group, include_extras=True)
    defaults = dict(taken.defaults)
    unknown = (set(taken.without) | set(defaults)) - {f.name for f in dataclasses.fields(group)}
    if unknown:
        raise TypeError(f"{group.__name__} has no flag {sorted(unknown)}")
    parts = tuple(
        _expand(f.name, hints[f.name], defaults.get(f.name, f.default), flat)
        for f in dataclasses.fields(group)
        if f.name not in taken.without
    )
    return _Slot(name, group, parts)


def _build(slot: _Slot, given: dict[str, Any]) -> Any:
    if slot.group is None:
        return given[slot.name]
    return slot.group(**{part.name: _build(part, given) for part in slot.parts})


def takes_groups(command: F) -> F:
    """The command as typer sees it: every group parameter replaced by its flags (see above)."""
    hints = typing.get_type_hints(command, include_extras=True)
    flat: dict[str, inspect.Parameter] = {}
    slots = [
        _expand(p.name, hints[p.name], p.default, flat)
        for p in inspect.signature(command).parameters.values()
    ]

    @functools.wraps(command)
    def flat_command(**given: Any) -> Any:
        return command(**{slot.name: _build(slot, given) for slot in slots})

    flat_command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        list(flat.values()), return_annotation=hints.get("return", inspect.Signature.empty)
    )
    flat_command.__annotations__ = {name: p.annotation for name, p in flat.items()}
    return typing.cast(F, flat_command)


__all__ = [
    "Access",
    "Arrival",
    "Checks",
    "Client",
    "Endpoint",
    "Output",
    "RunLength",
    "SampleLibrary",
    "prompted_law",
    "take",
    "takes_groups",
    "target_flags",
]
