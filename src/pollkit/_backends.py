"""Choosing a driver: probes, preference order, ``open_poller()``."""

from __future__ import annotations

import os
from collections.abc import Callable

from ._base import Poller
from .errors import BackendUnavailableError

__all__ = ["BACKENDS", "ENV_VAR", "available_backends", "backend_status", "open_poller"]

#: The environment variable ``open_poller(None)`` reads.
ENV_VAR = "POLLKIT_BACKEND"


def _epoll() -> Poller:
    from ._epoll import EpollPoller

    return EpollPoller()


def _poll() -> Poller:
    from ._poll import PollPoller

    return PollPoller()


def _select() -> Poller:
    from ._select import SelectPoller

    return SelectPoller()


#: Drivers in preference order.  epoll first: its cost per call grows with the
#: number of *ready* fds, not registered ones, and it alone has edge and
#: exclusive modes.  poll next: O(registered) per call, but no fd limit.
#: select last: O(registered) per call and fds below 1024 only.
BACKENDS: dict[str, Callable[[], Poller]] = {
    "epoll": _epoll,
    "poll": _poll,
    "select": _select,
}


def _open(name: str) -> Poller:
    import select

    if name in ("epoll", "poll") and not hasattr(select, name):
        raise OSError(f"this Python's select module has no {name}() (not Linux?)")
    return BACKENDS[name]()


def backend_status() -> dict[str, str | None]:
    """Each driver's name and ``None`` if a probe could open it, else the reason."""
    status: dict[str, str | None] = {}
    for name in BACKENDS:
        try:
            _open(name).close()
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


def resolve_backend_name(backend: str | None = None) -> str:
    """The driver name ``open_poller(backend)`` would use, without opening it."""
    if backend is None:
        backend = os.environ.get(ENV_VAR, "").strip() or "auto"
    if not isinstance(backend, str):
        raise BackendUnavailableError(
            f"backend must be a driver name, 'auto' or None, not {backend!r}"
        )
    name = backend.strip().lower()
    if name == "auto":
        available = available_backends()
        if not available:
            raise _unavailable("auto", "found no driver")
        return available[0]
    if name not in BACKENDS:
        raise _unavailable(backend, f"is not a driver ({', '.join(BACKENDS)} or auto)")
    return name


def open_poller(backend: str | None = None) -> Poller:
    """Open a poller.

    ``backend`` is ``"epoll"``, ``"poll"``, ``"select"``, ``"auto"`` (the
    first that opens, in that order) or ``None``, which reads the
    ``POLLKIT_BACKEND`` environment variable and falls back to ``"auto"``.

    Raises:
        BackendUnavailableError: the name is unknown, or the driver cannot be
            opened here; the message lists what is available and why the
            rest are not.
    """
    name = resolve_backend_name(backend)
    try:
        return _open(name)
    except OSError as exc:
        raise _unavailable(name, f"cannot be opened ({exc})") from exc
