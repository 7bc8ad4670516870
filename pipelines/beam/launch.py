"""How a Beam pipeline of this project is launched: one argv and options builder for all.

Every pipeline module (``images``, ``encode``) has a ``run(argv)`` for launchers that run
a Python file (Airflow's Beam operator, ``python -m``). They all take the same flags —
``--config FILE --lake URI [--dt D …] [--runner R]`` plus their own — and pass any other
``--key=value`` (or bare ``--switch``) on as Beam pipeline options, on top of the config's
``beam.options``. :func:`parse_launch_args` reads that argv (Airflow's Beam operator writes
it from its ``pipeline_options``) and :func:`pipeline_options` turns the result into Beam's
``PipelineOptions``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["LaunchArgs", "parse_launch_args", "pipeline_options"]


@dataclass(frozen=True)
class LaunchArgs:
    """A pipeline module's command line, parsed."""

    config: str | None
    lake: str | None
    dt: list[str]
    runner: str | None
    own: argparse.Namespace  # the module's own flags (e.g. encode's --dataset)
    options: dict[str, Any] = field(default_factory=dict)  # passthrough Beam pipeline options


def parse_launch_args(argv: list[str] | None, *, description: str,
                      add_own: Callable[[argparse.ArgumentParser], None] | None = None) -> LaunchArgs:
    """Parse a pipeline module's argv: the shared flags, its own (``add_own``), Beam options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="config YAML")
    parser.add_argument("--lake", default=None, help="lake root URI (overrides lake.root)")
    parser.add_argument("--dt", action="append", default=[], help="a dt partition (repeatable)")
    parser.add_argument("--runner", default=None, help="Beam runner (default: beam.runner)")
    own = argparse.ArgumentParser(add_help=False)
    if add_own is not None:
        add_own(parser)
        add_own(own)
    known, passthrough = parser.parse_known_args(argv)
    options: dict[str, Any] = {}
    for flag in passthrough:
        if not flag.startswith("--"):
            parser.error(f"unexpected argument {flag!r} (Beam options are --key=value)")
        key, sep, value = flag[2:].partition("=")
        options[key] = value if sep else True
    own_ns = argparse.Namespace(**{a.dest: getattr(known, a.dest) for a in own._actions})
    return LaunchArgs(known.config, known.lake, list(known.dt), known.runner, own_ns, options)


def pipeline_options(runner: str, options: Mapping[str, Any]):
    """``PipelineOptions`` from a runner and ``{flag: value}`` (True: a bare switch, False: off)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    flags = [f"--runner={runner}"]
    for key, value in sorted(options.items()):
        if value is True:
            flags.append(f"--{key}")  # Beam's boolean options are bare switches
        elif value is not False:
            flags.append(f"--{key}={value}")
    return PipelineOptions(flags)
