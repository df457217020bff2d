"""PNG plots of a benchmark run (needs matplotlib: ``pip install 'pollkit[bench]'``).

Every plot is drawn from the JSON document the run wrote, so a saved run can
be plotted again later: ``python benchmarks/plots.py RESULTS.json DIR``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from memory import TARGET_BYTES
from pollkit._select import FD_SETSIZE as _FD_SETSIZE


def plot_all(document: dict[str, Any], directory: str | os.PathLike[str]) -> list[Path]:
    """Draw one PNG per study present in ``document`` into ``directory``; return their paths.

    Raises ``ImportError`` without matplotlib.
    """
    _pyplot()  # raises ImportError early, before any file is written
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    studies = document.get("studies", {})
    machine = document.get("machine", {})
    caption = (
        f"{machine.get('cpu_count', '?')} CPUs, Python {machine.get('python', '?')}, "
        f"pollkit {machine.get('pollkit', '?')}; medians of alternating rounds, bars: p25-p75"
    )
    drawers = {
        "overhead": _overhead,
        "scaling": _scaling,
        "echo": _echo,
        "memory": _memory,
        "workers": _workers,
        "resp": _resp,
    }
    written = []
    for name, draw in drawers.items():
        if name in studies:
            path = target / f"{name}.png"
            draw(studies[name], path, caption)
            written.append(path)
    return written


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (files only, never a display).

    Imported by name: matplotlib is optional, so this module treats it as ``Any``.
    """
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _save(figure: Any, path: Path, caption: str) -> None:
    figure.text(0.5, 0.005, caption, ha="center", va="bottom", fontsize=7, color="0.4")
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    figure.savefig(path, dpi=110)
    _pyplot().close(figure)


def _overhead(study: dict[str, Any], path: Path, caption: str) -> None:
    plt = _pyplot()
    cases = [c for c in study["cases"] if not c.get("skipped")]
    series = ("pollkit", "wrapper", "selectors")
    figure, axes = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(series)
    for index, name in enumerate(series):
        xs, ys, low, high = [], [], [], []
        for position, case in enumerate(cases):
            ratio = case["ratio_to_raw"].get(name)
            if ratio is None:
                continue
            xs.append(position + (index - (len(series) - 1) / 2) * width)
            ys.append(ratio["median"])
            low.append(ratio["median"] - ratio["p25"])
            high.append(ratio["p75"] - ratio["median"])
        axes.bar(xs, ys, width, yerr=[low, high], capsize=2, label=f"{name} / raw")
    for position, case in enumerate(cases):
        if case.get("target_pollkit_ratio"):
            target = case["target_pollkit_ratio"]
            axes.hlines(target, position - 0.45, position + 0.45, colors="red", linestyles="--")
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(cases)))
    axes.set_xticklabels([f"{c['driver']}\n{c['idle']} idle\n{c['ready']} ready" for c in cases])
    axes.set_ylabel("cost of poll(0) relative to the raw call")
    axes.set_title("poll(0) overhead (red dashes: pollkit's budget)")
    axes.legend()
    _save(figure, path, caption)


def _scaling(study: dict[str, Any], path: Path, caption: str) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    colours = {"epoll": "tab:blue", "poll": "tab:orange", "select": "tab:green"}
    styles = {"raw": "-", "pollkit": "--", "selectors": ":"}
    cases = [c for c in study["cases"] if not c.get("skipped")]
    for driver, colour in colours.items():
        for contender, style in styles.items():
            points = sorted(
                (c["idle"], c["ns_per_call"][contender]["median"])
                for c in cases
                if c["driver"] == driver and contender in c["ns_per_call"]
            )
            if points:
                xs, ys = zip(*points, strict=False)
                axes.plot(xs, ys, style, color=colour, marker="o", markersize=3,
                          label=f"{driver} {contender}")  # fmt: skip
    axes.axvline(_FD_SETSIZE, color="red", linestyle="--", linewidth=1)
    axes.text(
        _FD_SETSIZE * 1.08,
        0.5,
        f"select's FD_SETSIZE wall ({_FD_SETSIZE})",
        transform=axes.get_xaxis_transform(),  # x in data, y in axes fractions
        color="red",
        rotation=90,
        va="center",
        fontsize=8,
    )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("idle fds watched (plus 1 ready)")
    axes.set_ylabel("ns per poll(0)")
    axes.set_title("Cost of one poll(0): epoll stays flat, poll and select grow with N")
    axes.legend(fontsize=7, ncol=3)
    _save(figure, path, caption)


def _echo_series(points: list[dict[str, Any]], key: str, vary: str) -> dict[str, list[Any]]:
    """Per contender: (x, median, p25, p75) along the points that vary ``vary``."""
    fixed_other = {
        "connections": max((p["size"] for p in points), key=[p["size"] for p in points].count),
        "size": max(
            (p["connections"] for p in points), key=[p["connections"] for p in points].count
        ),
    }
    other = "size" if vary == "connections" else "connections"
    series: dict[str, list[Any]] = {}
    for point in points:
        if point[other] != fixed_other[vary]:
            continue
        for name, entry in point["contenders"].items():
            spread = entry.get(key)
            if spread is not None:
                series.setdefault(name, []).append(
                    (point[vary], spread["median"], spread["p25"], spread["p75"])
                )
    return {name: sorted(values) for name, values in series.items()}


def _echo(study: dict[str, Any], path: Path, caption: str) -> None:
    plt = _pyplot()
    points = study["points"]
    figure, grid = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        ("server_cpu_ns_per_message", "connections", "server CPU per message (us)", 1e-3),
        ("server_cpu_ns_per_message", "size", "server CPU per message (us)", 1e-3),
        ("messages_per_second", "connections", "messages per second", 1.0),
        ("p99", "connections", "p99 latency (us)", 1e-3),
    ]
    for axes, (key, vary, label, scale) in zip(grid.flat, panels, strict=False):
        for name, values in _echo_series(points, key, vary).items():
            xs = [v[0] for v in values]
            ys = [v[1] * scale for v in values]
            errors = [
                [(v[1] - v[2]) * scale for v in values],
                [(v[3] - v[1]) * scale for v in values],
            ]
            style = "-" if name.startswith("pollkit") else "--"
            axes.errorbar(xs, ys, yerr=errors, fmt=style, marker="o", markersize=3,
                          capsize=2, label=name)  # fmt: skip
        axes.set_xscale("log")
        axes.set_xlabel("connections" if vary == "connections" else "message size (bytes)")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    grid.flat[0].legend(fontsize=7)
    figure.suptitle("Echo servers under closed-loop load (server pinned to one CPU)")
    _save(figure, path, caption)


def _memory(study: dict[str, Any], path: Path, caption: str) -> None:
    plt = _pyplot()
    results = [r for r in study["results"] if r.get("rss_bytes_per_connection")]
    counts = sorted({r["connections"] for r in results})
    names = list(dict.fromkeys(r["contender"] for r in results))
    figure, axes = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(len(counts), 1)
    for index, count in enumerate(counts):
        xs, ys = [], []
        for position, name in enumerate(names):
            for result in results:
                if result["contender"] == name and result["connections"] == count:
                    xs.append(position + (index - (len(counts) - 1) / 2) * width)
                    ys.append(result["rss_bytes_per_connection"]["median"])
        axes.bar(xs, ys, width, label=f"{count} connections")
    budget = f"{TARGET_BYTES} B budget (epoll)"
    axes.axhline(TARGET_BYTES, color="red", linestyle="--", linewidth=1, label=budget)
    axes.set_xticks(range(len(names)))
    axes.set_xticklabels(names, rotation=20, ha="right")
    axes.set_ylabel("server RSS bytes per held idle connection")
    axes.set_yscale("log")
    axes.set_title("Memory per held idle connection")
    axes.legend(fontsize=8)
    _save(figure, path, caption)


def _workers(study: dict[str, Any], path: Path, caption: str) -> None:
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for point in study["points"]:
        names = list(point["contenders"])
        counts = [int(name.split("-")[1]) for name in names]
        for axes, key, label, scale in (
            (left, "messages_per_second", "messages per second", 1.0),
            (right, "server_cpu_ns_per_message", "server CPU per message (us, all workers)", 1e-3),
        ):
            values = [point["contenders"][n].get(key) for n in names]
            ys = [v["median"] * scale if v else 0.0 for v in values]
            axes.bar([str(c) for c in counts], ys)
            axes.set_xlabel("worker processes")
            axes.set_ylabel(label)
    figure.suptitle(
        f"pollkit echo --workers N ({study.get('backend')}), {study.get('cpus')} CPUs shared "
        "with the load generator"
    )
    _save(figure, path, caption)


def _resp(study: dict[str, Any], path: Path, caption: str) -> None:
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    points = study["points"]
    names = list(dict.fromkeys(n for p in points for n in p["contenders"]))
    width = 0.8 / max(len(points), 1)
    for index, point in enumerate(points):
        offset = (index - (len(points) - 1) / 2) * width
        for axes, key in (
            (left, "requests_per_second"),
            (right, "cpu_per_request_ratio_to_redis"),
        ):
            xs, ys, low, high = [], [], [], []
            for position, name in enumerate(names):
                spread = point["contenders"].get(name, {}).get(key)
                if spread:
                    xs.append(position + offset)
                    ys.append(spread["median"])
                    low.append(spread["median"] - spread["p25"])
                    high.append(spread["p75"] - spread["median"])
            axes.bar(xs, ys, width, yerr=[low, high], capsize=2, label=f"-P {point['pipeline']}")
    for axes, label in (
        (left, "requests per second"),
        (right, "server CPU per request / redis-server's"),
    ):
        axes.set_xticks(range(len(names)))
        axes.set_xticklabels(names, rotation=20, ha="right")
        axes.set_ylabel(label)
        axes.legend(fontsize=8)
    right.axhline(1.0, color="black", linewidth=0.8)
    figure.suptitle("redis-benchmark -t ping,set,get -c 50 against RESP servers")
    _save(figure, path, caption)


if __name__ == "__main__":
    import json
    import sys

    if len(sys.argv) != 3:
        sys.exit("usage: plots.py RESULTS.json DIR")
    with open(sys.argv[1]) as results:
        for written in plot_all(json.load(results), sys.argv[2]):
            print(f"wrote {written}")
