"""Every flag that options.py declares is taken from there, with one help text and one default."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from typing import Any

import typer
from typer.models import OptionInfo

from loadtest.cli import app
from loadtest.commands import options

# Same flag, another meaning: these commands read results or build things, they measure nothing.
DISTINCT = {
    ("plan", "--percentile"),  # the SLO to plan for; default: the one measured
    ("plan", "--target-latency"),
    ("plan", "--output"),  # the plan's JSON file
    ("report", "--output"),  # the HTML file
    ("export", "--output"),  # the CSV directory
    ("diff", "--seed"),  # the bootstrap's seed
    ("serve", "--model"),  # models to load, repeatable
    ("mix", "--model"),  # an entry NAME[@HOST:PORT]:QPS[:BOUND_MS], repeatable
    ("sessions", "--model"),  # a text model that streams: llm_known
    ("sessions", "--protocol"),  # only the protocols that play turns: openai by default
    ("serve", "--repository"),  # the repository to serve
    ("stub", "--repository"),  # configs to answer with, optional
    ("models build", "--model"),
    ("models build", "--seed"),  # the weights' seed
    ("models build", "--force"),  # rebuild the models, not overwrite results
    ("models build", "--repository"),
    ("models list", "--repository"),
}
# Defaults that follow the scenario (MLPerf's minimum query counts, SingleStream's p90).
PER_COMMAND_DEFAULT = {"--min-queries", "--percentile"}


def _flag(info: OptionInfo, parameter: str) -> str:
    """The long flag; under Annotated, typer keeps the first declaration in `default`."""
    decls = [d for d in (info.default, *info.param_decls) if isinstance(d, str)]
    long = [d.split("/")[0] for d in decls if d.startswith("--")]
    return long[0] if long else f"--{parameter.replace('_', '-')}"


def _option_info(hint: Any) -> OptionInfo | None:
    return next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, OptionInfo)), None)


def _shared() -> dict[str, OptionInfo]:
    """options.py's aliases by flag."""
    found: dict[str, OptionInfo] = {}
    for name in dir(options):
        info = _option_info(getattr(options, name))
        if info is not None:
            flag = _flag(info, name)
            assert flag not in found, f"{flag} is declared twice in options.py"
            found[flag] = info
    return found


def _callbacks(
    typer_app: typer.Typer, prefix: str = ""
) -> Iterator[tuple[str, Callable[..., Any]]]:
    for command in typer_app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        yield prefix + name, command.callback
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None and group.name
        yield from _callbacks(group.typer_instance, f"{prefix}{group.name} ")


def _click_commands(group: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(name, click command) for every command; typer builds them with its own click."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _click_commands(command, f"{prefix}{name} ")
        else:
            yield prefix + name, command


def test_options_py_declares_the_shared_flags():
    shared = _shared()
    for flag in ("--model", "--url", "--protocol", "--shape", "--input-data", "--shared-memory"):
        assert flag in shared
    assert len(shared) >= 25


def test_every_command_takes_shared_flags_from_options_py():
    shared = _shared()
    checked = 0
    for command, callback in _callbacks(app):
        hints = typing.get_type_hints(callback, include_extras=True)
        for parameter, hint in hints.items():
            info = _option_info(hint)
            if info is None:
                continue
            flag = _flag(info, parameter)
            if flag in shared and (command, flag) not in DISTINCT:
                assert info is shared[flag], f"{command} declares its own {flag}: use options.py's"
                checked += 1
    assert checked > 100


def test_a_shared_flag_has_one_help_text_and_one_default():
    shared = _shared()
    defaults: dict[str, dict[str, Any]] = {}
    for command, click_command in _click_commands(typer.main.get_command(app)):
        for param in click_command.params:
            flag = param.opts[0]
            if flag not in shared or (command, flag) in DISTINCT:
                continue
            assert param.help == shared[flag].help, (command, flag)
            if flag not in PER_COMMAND_DEFAULT:
                defaults.setdefault(flag, {})[command] = param.default
    for flag, by_command in defaults.items():
        assert len({repr(value) for value in by_command.values()}) == 1, (flag, by_command)
    # the target, sample and output flags reach every measuring command
    for flag in ("--url", "--protocol", "--timeout", "--samples", "--shape", "--output"):
        assert {"server", "offline", "single-stream", "find-peak", "compare"} <= set(
            defaults[flag]
        ), flag
