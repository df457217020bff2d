"""The one harness every study uses, here and in the repository's ``benchmarks/``.

Contenders take turns in serpentine rounds (A B C, then C B A), so a burst of
load lands on one round of everyone, not on every round of one.  A figure is
the median of its rounds with its spread ``[p25-p75]``; a ratio is paired, the
median of each round's own ratio.  :func:`judge` is the one verdict on a
target.  A table is data kept in the JSON: the docs show what the terminal did.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ..errors import PollkitError

__all__ = ["BenchError", "Progress", "cell", "judge", "machine_info", "paired_ratios",
           "percentile", "run_studies", "serpentine", "summarize", "table", "table_text",
           "verdict", "write_json"]  # fmt: skip

_T = TypeVar("_T")
Round = dict[str, Any]  # one contender's figures in one round


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (0..1) of sorted ``ordered``, interpolated linearly."""
    position = fraction * (len(ordered) - 1)
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, float] | None:
    """``{median, p25, p75, min, max, n}`` of ``values``; ``None`` for none."""
    ordered = sorted(values)
    if not ordered:
        return None
    middle = {"median": percentile(ordered, 0.5), "p25": percentile(ordered, 0.25)}
    return middle | {"p75": percentile(ordered, 0.75), "min": ordered[0], "max": ordered[-1],
                     "n": len(ordered)}  # fmt: skip


def serpentine(items: Sequence[_T], round_number: int) -> list[_T]:
    """``items`` in round ``round_number``'s order: forwards on even rounds, backwards on odd."""
    return list(items) if round_number % 2 == 0 else list(items)[::-1]


def paired_ratios(mine: Sequence[Round], theirs: Sequence[Round], key: str) -> list[float]:
    """Round-by-round ``mine[i][key] / theirs[i][key]``, leaving out failed or empty rounds."""
    pairs = zip(mine, theirs, strict=False)
    return [a[key] / b[key] for a, b in pairs if a.get(key) and b.get(key) and not _failed(a, b)]


def _failed(*rounds: Round) -> bool:
    return any("error" in r for r in rounds)


def judge(
    target: str, spread: dict[str, float] | None, limit: float, *, below: bool = False
) -> dict[str, Any] | None:
    """The verdict on ``target``: is the median of ``spread`` (paired ratios, say) within ``limit``?

    Within is ``<= limit``, or ``< limit`` with ``below``; ``None`` if nothing was measured.
    """
    if spread is None:
        return None
    median, rule = spread["median"], "<" if below else "<="
    met = median < limit if below else median <= limit
    found = {"target": target, "rule": rule, "limit": limit, "measured": median, "met": met}
    return found | {"spread": [spread["p25"], spread["p75"]], "n": spread["n"]}


def verdict(judged: dict[str, Any] | None) -> str:
    """``"met"``, ``"MISSED"`` or ``"-"`` (not measured), as every table prints a verdict."""
    return "-" if judged is None else ("met" if judged["met"] else "MISSED")


def cell(spread: dict[str, float] | None, scale: float = 1.0, digits: int = 2) -> str:
    """``median [p25-p75]`` of a spread, each times ``scale``; ``-`` for none."""
    if spread is None:
        return "-"
    m, lo, hi = (spread[k] * scale for k in ("median", "p25", "p75"))
    return f"{m:,.{digits}f} [{lo:,.{digits}f}-{hi:,.{digits}f}]"


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> dict[str, Any]:
    """A table as the JSON stores it: every cell a string, every row as long as the headers."""
    cells = [[str(c) for c in row] + [""] * (len(headers) - len(row)) for row in rows]
    return {"title": title, "headers": list(headers), "rows": cells}


def table_text(data: dict[str, Any]) -> str:
    """A :func:`table` as plain text: title, then the first column left-aligned, the rest right."""
    lines = [data["headers"], *data["rows"]]
    widths = [max(len(row[i]) for row in lines) for i in range(len(data["headers"]))]

    def line(row: Sequence[str]) -> str:
        return "  ".join([row[0].ljust(widths[0]), *map(str.rjust, row[1:], widths[1:])]).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([data["title"], line(lines[0]), rule, *map(line, lines[1:])])


def _targets_table(targets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Every judged target: limit, measured median, spread, verdict."""
    rows = []
    for t in targets:
        (low, high), places = t["spread"], 3 if t["limit"] < 100 else 0  # ratios; bytes whole
        rows.append([t["target"], f"{t['rule']} {t['limit']:g}", f"{t['measured']:.{places}f}",
                     f"[{low:.{places}f}-{high:.{places}f}]", t["n"], verdict(t)])  # fmt: skip
    headers = ["target", "limit", "measured", "[p25-p75]", "rounds", "verdict"]
    return table("targets: medians of paired ratios (memory: of rounds)", headers, rows)


def run_studies(runners: Mapping[str, Callable[[], dict[str, Any]]], settings: dict[str, Any],
                json_path: str | None, progress: Progress) -> dict[str, Any]:  # fmt: skip
    """Run each study (its JSON, with ``table`` and ``targets``), print its table; write JSON.

    ``json_path`` (if not ``None``) is rewritten after each study: a long run keeps what it did.
    """
    started = time.monotonic()
    document: dict[str, Any] = {"schema": 2, "machine": machine_info(), "settings": settings}
    document |= {"studies": {}, "targets": []}
    for name, runner in runners.items():
        study = document["studies"][name] = runner()
        document["targets"] += study["targets"]
        print(table_text(study["table"]), end="\n\n", flush=True)
        if json_path is not None:
            write_json(json_path, document)
    document["targets_table"] = _targets_table(document["targets"])
    document["seconds"] = time.monotonic() - started
    if document["targets"]:
        print(table_text(document["targets_table"]), flush=True)
    if json_path is not None:
        progress.note(f"wrote {write_json(json_path, document)} ({document['seconds']:.0f} s)")
    return document


class BenchError(PollkitError, RuntimeError):
    """A study could not run (a server did not start, a contender misreported)."""


class Progress:
    """Progress lines on stderr, at most one a second; ``enabled=False`` prints nothing."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.start("", 0)

    def start(self, label: str, steps: int) -> None:
        self._label, self._total, self._done = label, max(steps, 1), 0
        self._started = self._last = time.monotonic()
        if label:
            self.note(f"{label}: {steps} steps")

    def step(self, detail: str) -> None:
        self._done += 1
        now = time.monotonic()
        if now - self._last >= 1.0 or self._done == self._total:
            self._last = now
            left = (now - self._started) / self._done * (self._total - self._done)
            self.note(f"{self._label}: {detail} [{self._done}/{self._total}, ~{left:.0f} s left]")

    def note(self, message: str) -> None:
        if self.enabled:
            print(f"[bench] {message}", file=sys.stderr, flush=True)


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the figures: CPUs, load, versions."""
    from .. import __version__

    with open("/proc/cpuinfo") as cpuinfo:
        models = [ln.split(":", 1)[1].strip() for ln in cpuinfo if ln.startswith("model name")]
    return {"pollkit": __version__, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "kernel": platform.release(),
            "cpu_count": os.cpu_count(), "cpu_model": (models or ["?"])[0],
            "loadavg": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}  # fmt: skip


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented JSON, creating parent directories; returns the path."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{path}.tmp").write_text(json.dumps(data, indent=1) + "\n")
    os.replace(f"{path}.tmp", path)  # a reader never sees half a file
    return Path(path)
