"""One set of argument checks, for the library and for every command line.

Each rule is written once, as a function that takes the argument's name and
its value and returns the value (normalised) or raises
:class:`~pollkit.errors.InvalidArgumentError` naming both.  The command-line
forms (``*_arg``) parse the text, apply the same rule with no name (argparse
puts ``argument --flag:`` in front) and turn the error into argparse's, so
that a bad command line is one line and exit status 2.

A bool is refused wherever a number is asked for: ``True`` is an int to
Python, but nobody means one second or one client by it.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from .errors import InvalidArgumentError

__all__ = [
    "as_argument",
    "backend_arg",
    "backends_arg",
    "int_at_least",
    "names_arg",
    "port",
    "port_arg",
    "positive_int",
    "positive_int_arg",
    "positive_ints_arg",
    "seconds",
    "seconds_arg",
]

_T = TypeVar("_T")


def _subject(name: str | None, value: object) -> str:
    shown = f"{value:g}" if isinstance(value, float) else repr(value)
    return f"{name} = {shown}" if name else shown


def int_at_least(name: str | None, value: object, minimum: int) -> int:
    """``value`` as an int ``>= minimum``; a bool or a float is refused."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{_subject(name, value)} is not a whole number")
    if value < minimum:
        raise InvalidArgumentError(f"{_subject(name, value)}: must be at least {minimum}")
    return int(value)


def positive_int(name: str | None, value: object) -> int:
    """``value`` as an int ``>= 1``."""
    return int_at_least(name, value, 1)


def seconds(name: str | None, value: object, *, allow_zero: bool = True) -> float:
    """``value`` as a finite number of seconds, ``>= 0`` (or ``> 0``)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise InvalidArgumentError(f"{_subject(name, value)} is not a number of seconds")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = "at least 0" if allow_zero else "more than 0"
        raise InvalidArgumentError(f"{_subject(name, value)} seconds: must be finite and {bound}")
    return float(value)


def port(name: str | None, value: object) -> int:
    """``value`` as a TCP/UDP port number, 0 (pick one) to 65535."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgumentError(f"{_subject(name, value)} is not a port number (0-65535)")
    if not 0 <= value <= 65535:
        raise InvalidArgumentError(f"port {value} is out of range (0-65535)")
    return int(value)


# -- command-line forms ----------------------------------------------------------


def as_argument(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """An argparse ``type=`` from ``parse``: its ``InvalidArgumentError`` becomes a usage error."""

    def argument(text: str) -> _T:
        try:
            return parse(text)
        except InvalidArgumentError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return functools.update_wrapper(argument, parse)


def _int_text(text: str) -> int | str:
    try:
        return int(text, 10)
    except ValueError:
        return text  # the rule then says it is not a whole number


def _float_text(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


@as_argument
def positive_int_arg(text: str) -> int:
    """An argparse ``type=`` for ``--flag N`` with a whole N >= 1."""
    return positive_int(None, _int_text(text))


@as_argument
def port_arg(text: str) -> int:
    """An argparse ``type=`` for ``--port N``, a whole N in 0-65535 (0: any free port)."""
    return port(None, _int_text(text))


def seconds_arg(*, allow_zero: bool) -> Callable[[str], float]:
    """An argparse ``type=`` for ``--flag SECONDS``: finite, and ``> 0`` unless ``allow_zero``."""

    @as_argument
    def seconds_text(text: str) -> float:
        return seconds(None, _float_text(text), allow_zero=allow_zero)

    return seconds_text


@as_argument
def positive_ints_arg(text: str) -> list[int]:
    """``--flag 1,10,50``: comma-separated ints, each >= 1, at least one."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InvalidArgumentError(f"{text!r}: expected comma-separated whole numbers")
    return [positive_int(None, _int_text(part)) for part in parts]


def backend_arg(text: str) -> str:
    """``--backend SPEC``: a driver or ``auto``, optionally prefixed (``debug:epoll``).

    An unknown name is a usage error; whether a known driver opens here is
    found out when it is opened (a runtime error that says why).
    """
    from ._backends import check_backend_name
    from .errors import BackendUnavailableError

    try:
        return check_backend_name(text)
    except BackendUnavailableError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def backends_arg(text: str) -> list[str]:
    """``--backends a,b``: comma-separated backend specs, each as ``--backend`` takes it."""
    specs = [backend_arg(part) for part in text.split(",") if part.strip()]
    if not specs:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated driver names")
    return specs


def names_arg(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """``--flag a,b``: comma-separated names from ``choices``, any case."""

    @as_argument
    def names(text: str) -> list[str]:
        chosen = [part.strip().lower() for part in text.split(",") if part.strip()]
        unknown = [name for name in chosen if name not in choices]
        if unknown or not chosen:
            raise InvalidArgumentError(
                f"unknown name(s) {', '.join(unknown) or repr(text)}; "
                f"choose from {', '.join(choices)}"
            )
        return chosen

    return names
