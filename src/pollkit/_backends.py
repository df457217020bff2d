"""The one driver registry: names, prefixes, preference order, ``open_poller()``.

Everything that takes a driver name -- ``open_poller()``, ``POLLKIT_BACKEND``,
every ``--backend``, the pytest plugin, the compat adapter, the bench --
reads it from here.  A *backend spec* is a driver name (or ``auto``) with
optional checking-wrapper prefixes in front: ``epoll``, ``debug:poll``,
``chaos:debug:select``, ``debug:auto``.  Prefixes apply outside in:
``chaos:debug:select`` is a chaos wrapper around a debug wrapper around the
select driver.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import NamedTuple

from ._base import Poller
from ._epoll import EpollPoller
from ._poll import PollPoller
from ._select import SelectPoller
from .errors import BackendUnavailableError

__all__ = [
    "DRIVERS",
    "ENV_VAR",
    "PREFIXES",
    "PREFIX_HELP",
    "BackendSpec",
    "available_backends",
    "backend_status",
    "check_backend_name",
    "open_poller",
    "parse_backend",
    "resolve_backend_name",
]

#: The environment variable ``open_poller(None)`` reads.
ENV_VAR = "POLLKIT_BACKEND"


#: Drivers in preference order.  epoll first: its cost per call grows with the
#: number of *ready* fds, not registered ones, and it alone has edge and
#: exclusive modes.  poll next: O(registered) per call, but no fd limit.
#: select last: O(registered) per call and fds below 1024 only.
DRIVERS: dict[str, type[Poller]] = {
    "epoll": EpollPoller,
    "poll": PollPoller,
    "select": SelectPoller,
}

#: Checking wrappers, by prefix: ``module:class``, imported when first used.
#: Each class takes the wrapped :class:`Poller` as its one positional argument.
_WRAPPERS: dict[str, str] = {
    "debug": "pollkit._debug:DebugPoller",
    "chaos": "pollkit._chaos:ChaosPoller",
}

#: What each prefix does, in one line (``pollkit info``, the docs).
PREFIX_HELP: dict[str, str] = {
    "debug": "warns (PollkitDebugWarning) about misuse, naming the register() site",
    "chaos": "seeded faults the contract allows: split, shuffled, early and spurious "
    "reports, strict edges, held changes",
}

#: The prefixes a backend spec may carry.
PREFIXES: tuple[str, ...] = tuple(_WRAPPERS)

_AUTO = "auto"


class BackendSpec(NamedTuple):
    """A parsed backend spec: wrapper prefixes (outermost first) and a driver or ``auto``."""

    prefixes: tuple[str, ...]
    driver: str

    def __str__(self) -> str:
        return ":".join((*self.prefixes, self.driver))


def _valid_names() -> str:
    drivers = ", ".join(DRIVERS)
    prefixes = " or ".join(f"{prefix}:" for prefix in PREFIXES)
    return f"choose {drivers} or {_AUTO}, optionally prefixed by {prefixes}"


def parse_backend(spec: str) -> BackendSpec:
    """Split ``spec`` into prefixes and a driver, without opening anything.

    Case and surrounding blanks are ignored.  Raises
    :class:`BackendUnavailableError` naming the valid names for an unknown
    driver or prefix, a repeated prefix, or a spec that is not a string.
    """
    if not isinstance(spec, str):
        raise BackendUnavailableError(
            f"backend must be a driver name, {_AUTO!r} or None, not {spec!r}; {_valid_names()}"
        )
    parts = [part.strip() for part in spec.strip().lower().split(":")]
    *prefixes, driver = parts
    if driver not in DRIVERS and driver != _AUTO:
        raise BackendUnavailableError(f"{spec!r} is not a driver; {_valid_names()}")
    for prefix in prefixes:
        if prefix not in _WRAPPERS:
            raise BackendUnavailableError(f"{spec!r}: {prefix!r} is not a prefix; {_valid_names()}")
    if len(set(prefixes)) != len(prefixes):
        raise BackendUnavailableError(f"{spec!r} repeats a prefix; give each at most once")
    return BackendSpec(tuple(prefixes), driver)


def check_backend_name(text: str) -> str:
    """``text`` as a normalised spec (``"debug:epoll"``), or :class:`BackendUnavailableError`.

    For command lines: it refuses unknown names at once; whether a known
    driver opens here is found out when it is opened.
    """
    return str(parse_backend(text))


def _open_driver(name: str) -> Poller:
    import select

    if name in ("epoll", "poll") and not hasattr(select, name):
        raise OSError(f"this Python's select module has no {name}() (not Linux?)")
    return DRIVERS[name]()


def backend_status() -> dict[str, str | None]:
    """Each driver's name and ``None`` if a probe could open it now, else the reason.

    Every call opens each driver: whether one opens can change (select
    needs a free fd below ``FD_SETSIZE``).  ``open_poller()`` does not call
    it: it opens only the driver it returns.
    """
    status: dict[str, str | None] = {}
    for name in DRIVERS:
        try:
            _open_driver(name).close()
        except Exception as exc:  # noqa: BLE001  # any failure means "unavailable", and we say why
            status[name] = f"{type(exc).__name__}: {exc}"
        else:
            status[name] = None
    return status


def available_backends() -> list[str]:
    """The drivers that really open here, in preference order (epoll > poll > select)."""
    return [name for name, reason in backend_status().items() if reason is None]


def _unavailable(name: str, reason: str) -> BackendUnavailableError:
    status = backend_status()
    available = [n for n, why in status.items() if why is None]
    missing = "; ".join(f"{n}: {why}" for n, why in status.items() if why is not None)
    return BackendUnavailableError(
        f"backend {name!r} {reason}; available: {', '.join(available) or 'none'}"
        + (f" (unavailable: {missing})" if missing else "")
    )


def _spec_from(backend: str | None) -> BackendSpec:
    if backend is None:
        backend = os.environ.get(ENV_VAR, "").strip() or _AUTO
    try:
        return parse_backend(backend)
    except BackendUnavailableError as exc:
        available = ", ".join(available_backends()) or "none"
        raise BackendUnavailableError(f"{exc}; available here: {available}") from None


def resolve_backend_name(backend: str | None = None) -> str:
    """The spec ``open_poller(backend)`` would open, with ``auto`` resolved (``"debug:epoll"``)."""
    spec = _spec_from(backend)
    if spec.driver == _AUTO:
        available = available_backends()
        if not available:
            raise _unavailable(_AUTO, "found no driver")
        spec = spec._replace(driver=available[0])
    return str(spec)


def _wrapper(prefix: str) -> Callable[[Poller], Poller]:
    module_name, _, class_name = _WRAPPERS[prefix].partition(":")
    wrapper: Callable[[Poller], Poller] = getattr(importlib.import_module(module_name), class_name)
    return wrapper


def open_poller(backend: str | None = None) -> Poller:
    """Open a poller.

    ``backend`` is ``"epoll"``, ``"poll"``, ``"select"``, ``"auto"`` (the
    first that opens, in that order) or ``None``, which reads the
    ``POLLKIT_BACKEND`` environment variable and falls back to ``"auto"``.
    Any of them may carry the checking prefixes ``debug:`` and ``chaos:``
    (``"chaos:debug:poll"``); the poller's ``name`` is then the whole spec.

    Raises:
        BackendUnavailableError: the name is unknown, or the driver cannot be
            opened here; the message lists what is available and why the
            rest are not.
    """
    spec = _spec_from(backend)
    if spec.driver == _AUTO:
        # The open is the probe: the first driver that opens is the one used.
        for name in DRIVERS:
            try:
                poller = _open_driver(name)
            except OSError:
                continue
            break
        else:
            raise _unavailable(_AUTO, "found no driver")
    else:
        try:
            poller = _open_driver(spec.driver)
        except OSError as exc:
            raise _unavailable(spec.driver, f"cannot be opened ({exc})") from exc
    try:
        for prefix in reversed(spec.prefixes):
            poller = _wrapper(prefix)(poller)
    except BaseException:
        poller.close()
        raise
    return poller
