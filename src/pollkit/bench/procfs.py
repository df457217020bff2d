"""What ``/proc`` says about another process: CPU time, memory, open fds.

Two CPU clocks are read.  ``/proc/<pid>/stat`` ``utime + stime`` is the
classic one, in clock ticks (10 ms at the usual 100 Hz), so a short window
measures it coarsely.  ``/proc/<pid>/task/*/schedstat`` counts nanoseconds on
the CPU per thread, exactly; benchmarks prefer it and fall back to ticks
where the kernel has no schedstat (``CONFIG_SCHED_INFO`` off).
"""

from __future__ import annotations

import os

__all__ = [
    "CLOCK_TICKS",
    "cpu_seconds_from_stat",
    "descendants",
    "fd_count",
    "pss_bytes",
    "rss_bytes",
    "schedstat_ns",
]

#: Clock ticks per second, the unit of ``utime`` and ``stime``.
CLOCK_TICKS: int = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds_from_stat(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads), in seconds.

    Raises ``OSError`` (``ProcessLookupError``/``FileNotFoundError``) once the
    process is gone.
    """
    with open(f"/proc/{pid}/stat") as stat:
        text = stat.read()
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def schedstat_ns(pid: int) -> int | None:
    """Nanoseconds process ``pid``'s live threads have spent on a CPU; ``None`` if unknown.

    Threads that have exited are not counted; the servers measured here run
    one thread.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        except FileNotFoundError:
            if task == str(pid):
                return None  # no schedstat at all, or the process is gone
        except (ValueError, IndexError):
            return None
    return total


def rss_bytes(pid: int) -> int:
    """Resident set size (``VmRSS``) of process ``pid``, in bytes."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"/proc/{pid}/status has no VmRSS line (a kernel thread, or a zombie)")


def pss_bytes(pid: int) -> int | None:
    """Proportional set size from ``smaps_rollup``, in bytes; ``None`` where unavailable."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def fd_count(pid: int) -> int:
    """How many fds process ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def descendants(pid: int) -> list[int]:
    """The pids of every live descendant of process ``pid`` (children, theirs, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                text = stat.read()
        except OSError:
            continue  # exited while we looked
        parent = int(text[text.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child in children.get(current, []):
            found.append(child)
            frontier.append(child)
    return found
