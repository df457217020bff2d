"""The ``pollkit`` command line: ``info``, ``echo``, ``client`` and more.

Every subcommand lives in a module with an ``add_commands(subparsers)``
function that adds its parser and sets ``func`` to a callable taking the
parsed namespace and returning the exit status.  A bad command line prints one
line on stderr and exits 2; a runtime failure prints one line and exits 1.

The same pieces serve a server's own command line (``examples/resp_server.py``
uses them): :class:`ArgumentParser` (one-line errors), :func:`backend_argument`
(``--backend`` with pollkit's names and default) and the argument types
:func:`port_arg`, :func:`positive_int_arg` and :func:`seconds_arg`, whose
errors name the value as pollkit's own commands do.
"""

from __future__ import annotations

import argparse
import importlib
import json
import resource
import sys
from collections.abc import Sequence
from typing import NoReturn

from . import __version__
from ._backends import (
    DRIVERS,
    ENV_VAR,
    PREFIX_HELP,
    PREFIXES,
    backend_status,
    resolve_backend_name,
)
from ._validate import backend_arg, port_arg, positive_int_arg, seconds_arg
from .errors import PollkitError

__all__ = [
    "ArgumentParser",
    "backend_argument",
    "main",
    "port_arg",
    "positive_int_arg",
    "seconds_arg",
]

#: Modules that contribute subcommands besides ``info``.
_COMMAND_MODULES: tuple[str, ...] = ("pollkit.echo.cli", "pollkit.bench.cli")


class ArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line, never a usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (try --help)\n")


def backend_argument(parser: argparse.ArgumentParser) -> None:
    """Add the ``--backend NAME`` option every pollkit command has.

    It takes every name :func:`pollkit.open_poller` takes (a driver,
    ``auto``, ``debug:``/``chaos:`` ones) and refuses others in one line
    naming the choices.  Its default is ``None``: ``open_poller(None)``
    then follows ``$POLLKIT_BACKEND``, else picks automatically.
    """
    parser.add_argument(
        "--backend",
        metavar="NAME",
        type=backend_arg,
        default=None,
        help=f"driver: {', '.join(DRIVERS)} or auto, optionally prefixed by "
        f"{' or '.join(p + ':' for p in PREFIXES)} (default: ${ENV_VAR}, else auto)",
    )


def info_report() -> dict[str, object]:
    """What ``pollkit info`` prints, as data."""
    from ._select import FD_SETSIZE

    status = backend_status()
    try:
        default: str | None = resolve_backend_name(None)
        default_error = None
    except PollkitError as exc:
        default, default_error = None, str(exc)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "version": __version__,
        "default": default,
        "default_error": default_error,
        "env": {ENV_VAR: __import__("os").environ.get(ENV_VAR)},
        "fd_setsize": FD_SETSIZE,
        "rlimit_nofile": {"soft": soft, "hard": hard},
        "drivers": [
            {
                "name": name,
                "available": reason is None,
                "reason": reason,
                "features": sorted(DRIVERS[name].features),
            }
            for name, reason in status.items()
        ],
        "prefixes": [{"name": prefix, "help": PREFIX_HELP[prefix]} for prefix in PREFIXES],
    }


def _run_info(args: argparse.Namespace) -> int:
    report = info_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"pollkit {report['version']}")
    for driver in report["drivers"]:  # type: ignore[attr-defined]  # built just above as a list of dicts
        state = "available" if driver["available"] else f"unavailable ({driver['reason']})"
        features = ", ".join(driver["features"]) or "-"
        print(f"  {driver['name']:<7} {state}; features: {features}")
    for prefix in report["prefixes"]:  # type: ignore[attr-defined]  # built just above as a list of dicts
        print(f"  {prefix['name'] + ':<driver>':<15} {prefix['help']}")
    default = report["default"] or f"none: {report['default_error']}"
    print(f"default:        {default}  (${ENV_VAR}={report['env'][ENV_VAR] or ''})")  # type: ignore[index]  # a dict built above
    print(f"FD_SETSIZE:     {report['fd_setsize']}  (select cannot watch fds at or above it)")
    limit = report["rlimit_nofile"]
    print(f"RLIMIT_NOFILE:  soft {limit['soft']}, hard {limit['hard']}")  # type: ignore[index]  # a dict built above
    return 0


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="pollkit", description="Readiness-based I/O on Linux: epoll, poll and select."
    )
    parser.add_argument("--version", action="version", version=f"pollkit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    info = commands.add_parser(
        "info", help="list the drivers, which are available and why, and the limits"
    )
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_run_info)
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).add_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pollkit`` command line on ``argv`` (default: ``sys.argv[1:]``); the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
    except PollkitError as exc:
        print(f"pollkit {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
