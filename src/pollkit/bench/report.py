"""Progress lines, machine facts, tables and JSON files shared by every study."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["Progress", "format_table", "machine_info", "write_json"]


class Progress:
    """Progress lines on stderr: study, contender, round and an estimate of the time left.

    Lines are rate-limited so that printing never competes with what is being
    measured.  ``enabled=False`` makes every call a no-op.
    """

    def __init__(
        self, stream: TextIO | None = None, *, enabled: bool = True, interval: float = 1.0
    ) -> None:
        self._stream = sys.stderr if stream is None else stream
        self._enabled = enabled
        self._interval = interval
        self._study = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._last = 0.0

    def start(self, study: str, total_steps: int) -> None:
        """Begin a study of ``total_steps`` steps (rounds times contenders, say)."""
        self._study = study
        self._total = max(total_steps, 1)
        self._done = 0
        self._started = self._last = time.monotonic()
        self.note(f"{study}: {total_steps} steps")

    def step(self, detail: str) -> None:
        """Count one step done; print a line if the last one is old enough."""
        self._done += 1
        now = time.monotonic()
        if now - self._last < self._interval and self._done < self._total:
            return
        self._last = now
        elapsed = now - self._started
        left = elapsed / self._done * (self._total - self._done)
        self.note(f"{self._study}: {detail} [{self._done}/{self._total}, ~{left:.0f} s left]")

    def note(self, message: str) -> None:
        if self._enabled:
            print(f"[bench] {message}", file=self._stream, flush=True)


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the figures: CPUs, load, versions."""
    from .. import __version__

    info: dict[str, Any] = {
        "pollkit": __version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "kernel": platform.release(),
        "cpu_count": os.cpu_count(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if hasattr(os, "sched_getaffinity"):
        info["affinity"] = sorted(os.sched_getaffinity(0))
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, creating parent directories; returns the path."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_suffix(target.suffix + ".tmp")
    with open(temporary, "w") as out:
        json.dump(data, out, indent=2, sort_keys=False)
        out.write("\n")
    os.replace(temporary, target)  # readers never see half a file
    return target


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: the first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])
