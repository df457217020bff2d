"""What the ``debug:`` wrapper's tests share: a debug poller per driver, sites, loops.

The tests wrap the *plain* driver of this run (``debug:poll`` when the run is
``poll``, ``chaos:poll`` or ``debug:poll``), so that what they assert about
the debug wrapper's warnings does not depend on other wrappers' faults.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator

from conftest import Delegating
from pollkit import Poller, open_poller
from pollkit._backends import parse_backend
from pollkit._debug import DEFAULT_SPIN_THRESHOLD, PollkitDebugWarning

__all__ = [
    "SPIN_LOOP",
    "Delegating",
    "PollkitDebugWarning",
    "debug_poller",
    "debug_spec",
    "next_line",
    "run_loop",
    "warning_about",
]

#: Enough consecutive poll() calls to see a spin: the detector samples after
#: a few reports and warns after DEFAULT_SPIN_THRESHOLD without progress.
SPIN_LOOP = 4 * DEFAULT_SPIN_THRESHOLD


def debug_spec(backend: str) -> str:
    """``debug:<driver>`` for this run's backend spec, whatever its prefixes."""
    return f"debug:{parse_backend(backend).driver}"


@contextlib.contextmanager
def debug_poller(backend: str) -> Iterator[Poller]:
    """A debug poller around this run's driver, closed after the block."""
    poller = open_poller(debug_spec(backend))
    try:
        yield poller
    finally:
        poller.close()


def next_line() -> int:
    """The line number after the caller's: put the ``register()`` call there."""
    return sys._getframe(1).f_lineno + 1


def warning_about(fd: int, what: str, line: int) -> str:
    """``match=`` for a warning naming ``fd``, saying ``what`` (a regex) and the site."""
    caller_file = sys._getframe(1).f_code.co_filename
    where = re.escape(f"{os.path.basename(caller_file)}:{line}") + r"\b"
    return rf"\bfd {fd}\b.*{what}.*{where}"


def run_loop(
    poller: Poller,
    handle: Callable[[int, int], object],
    *,
    calls: int = SPIN_LOOP,
    timeout: float = 0,
    before: Callable[[], object] | None = None,
) -> int:
    """Call ``poll(timeout)`` ``calls`` times, ``handle(fd, mask)`` for each event.

    ``before`` runs before each call.  Returns the number of events handled.
    """
    handled = 0
    for _ in range(calls):
        if before is not None:
            before()
        for fd, mask in poller.poll(timeout):
            handle(fd, mask)
            handled += 1
    return handled
