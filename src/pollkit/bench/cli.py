"""``pollkit bench``: which driver suits this machine, measured here with pollkit alone.

Studies: ``overhead``, one ``poll(0)`` with 1,000 idle fds (500 on select) and
1 or 64 ready, each driver beside the raw call beneath it; ``scaling``, the
same with N idle fds; ``echo``, ``pollkit echo`` on each driver under load.
Comparisons with other servers live in the repository's ``benchmarks/``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .._backends import DRIVERS
from .._validate import backends_arg, names_arg, positive_int_arg, positive_ints_arg, seconds_arg

__all__ = ["STUDIES", "add_commands", "backends_arg", "configure_parser", "run"]

STUDIES = ("overhead", "scaling", "echo")

#: The sizes of a full run.
FULL: dict[str, Any] = {
    "rounds": 200, "scaling_rounds": 30, "echo_rounds": 7, "idle": 1000,
    "scaling_fds": [10, 30, 100, 300, 1000, 3000, 10000], "connections": [1, 50, 500],
    "sizes": [1024], "duration": 1.0,
}  # fmt: skip
#: ``--quick``: a smoke check whose figures mean little.
QUICK: dict[str, Any] = FULL | {"rounds": 20, "scaling_rounds": 5, "echo_rounds": 1}
QUICK |= {"duration": 0.3, "scaling_fds": [10, 100, 1000], "connections": [10]}

_SIZES: tuple[tuple[str, Callable[[str], Any], str, str], ...] = (
    ("--idle", positive_int_arg, "N", "overhead: idle fds"),
    ("--scaling-fds", positive_ints_arg, "LIST", "scaling: idle fd counts"),
    ("--connections", positive_ints_arg, "LIST", "echo: connection counts"),
    ("--sizes", positive_ints_arg, "LIST", "echo: message sizes in bytes"),
    ("--duration", seconds_arg(allow_zero=False), "SECONDS", "echo: measured seconds per round"),
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add ``pollkit bench``'s arguments to ``parser`` and make it run the studies."""
    add = parser.add_argument
    add("studies", nargs="*", type=names_arg(STUDIES), metavar="STUDY",
        help=f"what to measure: {', '.join(STUDIES)} (default: all)")  # fmt: skip
    add("--quick", action="store_true", help="small sizes, few rounds: a smoke check")
    add("--rounds", type=positive_int_arg, metavar="N", help="rounds of every study")
    add("--backends", type=backends_arg, metavar="LIST",
        help=f"drivers, prefixes allowed (debug:epoll) (default: {','.join(DRIVERS)})")  # fmt: skip
    for flag, kind, metavar, what in _SIZES:
        default = FULL[flag[2:].replace("-", "_")]
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        add(flag, type=kind, metavar=metavar, help=f"{what} (default: {shown})")
    add("--json", metavar="PATH", help="also write every figure, each round included, to PATH")
    add("--quiet", action="store_true", help="no progress lines on stderr")
    parser.set_defaults(func=run)


def add_commands(subparsers: Any) -> None:
    """Add ``bench`` to the ``pollkit`` command line."""
    help = "measure the drivers here, against the raw calls beneath them"
    parser = subparsers.add_parser(
        "bench", help=help, description=(__doc__ or help).split("\n\n")[0]
    )
    configure_parser(parser)


def run(args: argparse.Namespace) -> int:
    """Run the studies ``args`` asks for; print their tables; write JSON if asked."""
    from . import echo, overhead
    from .harness import Progress, run_studies

    chosen = list(dict.fromkeys(name for names in args.studies for name in names)) or STUDIES
    sizes = (QUICK if args.quick else FULL).copy()
    given = {flag[2:].replace("-", "_") for flag, *_ in _SIZES}
    sizes |= {key: getattr(args, key) for key in given if getattr(args, key) is not None}
    if args.rounds is not None:
        sizes |= dict.fromkeys(("rounds", "scaling_rounds", "echo_rounds"), args.rounds)
    specs = args.backends or list(DRIVERS)
    progress = Progress(enabled=not args.quiet)
    idle, points = sizes["idle"], [(c, s) for c in sizes["connections"] for s in sizes["sizes"]]
    scaling = [(n, 1) for n in sizes["scaling_fds"]]
    studies = {
        "overhead": lambda: overhead.run("overhead", specs, [(idle, 1), (idle, 64)],
                                         sizes["rounds"], progress, select_idle=500),
        "scaling": lambda: overhead.run("scaling", specs, scaling, sizes["scaling_rounds"],
                                        progress),
        "echo": lambda: echo.run("echo", echo.pollkit_contenders(specs), points,
                                 sizes["echo_rounds"], progress, duration=sizes["duration"]),
    }  # fmt: skip
    runners = {name: studies[name] for name in chosen}
    run_studies(runners, sizes | {"backends": specs}, args.json, progress)
    return 0
