"""Turn the JSON document ``pollkit bench --json`` writes into reStructuredText.

The Performance page quotes no figure by hand: every table, and every number
in its "which driver" advice, is rendered here from the committed results, so
the page cannot disagree with the data.  :func:`render` is the whole
interface; ``pollkit_bench_docs.py`` is the Sphinx directive around it.

This module is pure: the standard library and :mod:`pollkit.bench` only, no
Sphinx, Python 3.10+, so ``tests/test_docs_performance.py`` runs it in every
test environment.  Its output is plain reStructuredText (no Sphinx roles), so
docutils alone can parse it.

The document's shape is :func:`pollkit.bench.cli.run`'s: ``machine``,
``settings``, ``studies`` (each study's ``as_dict()`` output), ``targets`` and
``seconds``.  A study the run did not include renders as an admonition saying
how to measure it; a document that is malformed raises ``KeyError``,
``TypeError`` or ``ValueError``, which the directive turns into a build error.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from pollkit import FD_SETSIZE
from pollkit.bench.cli import STUDIES, Settings
from pollkit.bench.echo import paired_ratio

__all__ = ["KINDS", "REPRODUCE", "RESULTS_PATH", "render"]

#: What the directive can render: one section per study, and the page-wide parts.
KINDS = ("machine", *STUDIES, "targets", "advice")

#: Where the committed results live, relative to the repository root.
RESULTS_PATH = "docs/_static/bench/results.json"

#: The command that writes the committed results and plots (run from the repository root).
REPRODUCE = "pollkit bench --plot docs/_static/bench --json docs/_static/bench/results.json"

# Typography for the page, spelled by name: ruff rightly flags a literal
# multiplication sign as a look-alike of the letter x.
_TIMES = "\N{MULTIPLICATION SIGN}"
_MINUS = "\N{MINUS SIGN}"

#: How close to epoll poll must stay to count as "as good" in the advice.
_POLL_MATCHES_EPOLL = 1.25

#: Below this growth from the smallest to the largest fd count, a driver "stays flat".
_FLAT = 1.5

#: What each echo contender is, for prose; the tables use the names the JSON and plots use.
_PEER_NAMES = {
    "raw-epoll": "the hand-written raw epoll loop",
    "selectors": "a stdlib selectors loop",
    "asyncio-protocol": "asyncio Protocol",
    "asyncio-streams": "asyncio streams",
    "uvloop-protocol": "uvloop Protocol",
}

_GENERATORS = {
    "c": "C (``pollkit/bench/loadgen.c``)",
    "python": "Python (``pollkit.bench.loadgen``)",
}

_CAPTIONS = {
    "overhead": "pollkit's ``poll(0)``, stdlib ``selectors`` and a bare wrapper, each relative "
    "to the raw call (median of each round's ratio; bars: p25-p75; red dashes: pollkit's budget).",
    "scaling": "Cost of one ``poll(0)`` with N idle fds and 1 ready fd, log-log; the red line "
    "is select's ``FD_SETSIZE`` wall.",
    "echo": "Echo servers under closed-loop load: server CPU per message against connections "
    "and message size, messages per second and p99 latency against connections.",
    "memory": "Server memory (RSS) per held idle connection; log scale.",
    "workers": "``pollkit echo --workers N``: throughput and server CPU per message, all "
    "workers together.",
}

Study = Mapping[str, Any]
Lines = list[str]


def render(
    kind: str,
    document: Mapping[str, Any] | None,
    *,
    figures: Mapping[str, str] | None = None,
    results_path: str = RESULTS_PATH,
) -> Lines:
    """The reStructuredText lines for ``kind`` (one of :data:`KINDS`) from ``document``.

    ``document`` is the parsed JSON, or ``None`` when no results are committed:
    then the lines are an admonition saying how to produce them.  ``figures``
    maps a study to the image URI of its plot, for the plots that exist; a
    study's section ends with its figure when there is one.  ``results_path``
    is how the admonitions name the results file.

    Raises ``ValueError`` for an unknown ``kind``, and ``KeyError``,
    ``TypeError`` or ``ValueError`` for a document without the shape
    ``pollkit bench`` writes.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; choose from {', '.join(KINDS)}")
    if document is None:
        return _admonition(
            "No benchmark results committed",
            f"``{results_path}`` does not exist, so there is nothing to show here yet. "
            f"Run ``{REPRODUCE}`` from the repository root and rebuild the docs.",
        )
    if kind == "machine":
        return _machine(document)
    if kind == "targets":
        return _targets(document)
    if kind == "advice":
        return _advice(document)
    study = document["studies"].get(kind)
    if study is None:
        return _admonition(
            f"No {kind} results",
            f"The committed run did not include the ``{kind}`` study. Run "
            f"``{REPRODUCE}`` (every study) and rebuild the docs.",
        )
    lines = _STUDY_TABLES[kind](study, document)
    figure = (figures or {}).get(kind)
    if figure is not None:
        lines += [f".. figure:: {figure}", f"   :alt: {kind} plot", "", f"   {_CAPTIONS[kind]}", ""]
    return lines


# -- formatting ---------------------------------------------------------------------------------


def _admonition(title: str, text: str) -> Lines:
    return [f".. admonition:: {title}", "   :class: warning", "", f"   {text}", ""]


def _us(ns: float) -> str:
    """Nanoseconds as microseconds, three significant figures or whole µs."""
    value = ns / 1000
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _us_unit(ns: float) -> str:
    return f"{_us(ns)} µs"


def _with_spread(spread: Mapping[str, Any], show: Callable[[float], str]) -> str:
    """``median [p25-p75]``; the median alone for a single round, whose spread is no spread."""
    median = show(spread["median"])
    if spread["n"] < 2:
        return median
    return f"{median} [{show(spread['p25'])}-{show(spread['p75'])}]"


def _ratio(value: float) -> str:
    return f"{value:.3f}"


def _times(value: float) -> str:
    """A ratio in prose: 1.17 and a multiplication sign."""
    return f"{value:.2f}{_TIMES}" if value < 10 else f"{value:,.0f}{_TIMES}"


def _count(value: int) -> str:
    return f"{value:,}"


def _possessive(name: str) -> str:
    return f"{name}'" if name.endswith("s") else f"{name}'s"


def _ready(count: int) -> str:
    return f"{count} ready fd" if count == 1 else f"{count} ready fds"


def _bytes(value: float) -> str:
    return f"{value:,.0f}"


def _rate(value: float) -> str:
    return f"{value:,.0f}"


def _median(spread: Mapping[str, Any] | None) -> float | None:
    return None if spread is None else float(spread["median"])


def _series(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    if len(items) < 2:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"


def _list_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> Lines:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}" if row[0] else "   * -")
        lines += [f"     - {cell}" if cell else "     -" for cell in row[1:]]
    return [*lines, ""]


def _paragraph(*sentences: str) -> Lines:
    return [" ".join(sentence for sentence in sentences if sentence), ""]


def _rounds_note(rounds: Iterable[int]) -> str:
    counts = sorted(set(rounds))
    if not counts:
        return ""
    if counts == [1]:
        return "One round each, so no spread: a smoke check rather than a measurement."
    shown = _count(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"Medians of {shown} alternating rounds; [p25-p75] is the spread of the rounds."


# -- the machine --------------------------------------------------------------------------------

_ARCHES = r"x86_64|i[3-6]86|aarch64|arm\w*|ppc64\w*|s390x|riscv64|mips\w*|loongarch64"


def _kernel(machine: Mapping[str, Any]) -> str:
    """The kernel release, from ``platform.platform()`` (``Linux-<release>-<arch>-with-...``)."""
    if machine.get("kernel"):
        return str(machine["kernel"])
    platform = str(machine.get("platform", "?"))
    found = re.match(rf"^(\w+)-(.+?)-({_ARCHES})(?:-|$)", platform)
    if found is None:
        return platform
    return f"{found.group(1)} {found.group(2)} ({found.group(3)})"


def _when(stamp: Any) -> str:
    """``2026-11-26T16:52:35+0000`` as ``2026-11-26 16:52 UTC+0000``."""
    try:
        moment = datetime.strptime(str(stamp), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return str(stamp)
    return f"{moment:%Y-%m-%d %H:%M} UTC{moment:%z}"


#: Settings named after one study that another uses too (the rest belong to their prefix).
_SHARED_SETTINGS = {
    "echo_warmup": ("echo", "workers"),
    "echo_duration": ("echo", "workers"),
}


def _changed_settings(settings: Mapping[str, Any]) -> list[str]:
    """``name=value (default d)`` for each study setting this run changed from the defaults."""
    defaults = Settings()
    studies = settings.get("studies", STUDIES)
    changed = []
    for field in fields(Settings):
        if field.name == "workers" or field.name not in settings:
            continue  # the workers default depends on the machine's CPU count
        used_by = _SHARED_SETTINGS.get(field.name, (field.name.split("_", 1)[0],))
        if not set(used_by) & set(studies):
            continue  # a setting of studies this run did not include
        default = getattr(defaults, field.name)
        value = settings[field.name]
        if isinstance(default, tuple):
            value = tuple(value)
        if value != default:
            changed.append(f"``{field.name}={_plain(value)}`` (default {_plain(default)})")
    return changed


def _plain(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _machine(document: Mapping[str, Any]) -> Lines:
    machine = document["machine"]
    settings = document.get("settings", {})
    cpus = machine.get("cpu_count", "?")
    took = ""
    if "seconds" in document:
        seconds = float(document["seconds"])
        took = f"{seconds / 60:.0f} minutes" if seconds >= 120 else f"{seconds:.0f} seconds"
        took = f", which took {took}"
    lines = _paragraph(
        f"Every figure on this page comes from one run of ``pollkit bench`` on this "
        f"{cpus}-core machine, started {_when(machine.get('time'))}{took}."
    )
    generators = sorted(
        {
            document["studies"][s]["generator"]
            for s in ("echo", "workers")
            if s in document["studies"]
        }
    )
    load = machine.get("loadavg")
    load_end = machine.get("loadavg_end")
    rows = [
        ["CPU", f"{machine.get('cpu_model', '?')}, {cpus} cores"],
        ["CPUs this run could use", ", ".join(str(c) for c in machine.get("affinity", [])) or "?"],
        ["kernel", _kernel(machine)],
        ["Python", f"{machine.get('implementation', '')} {machine.get('python', '?')}".strip()],
        ["pollkit", str(machine.get("pollkit", "?"))],
    ]
    if load is not None:
        shown = " / ".join(f"{value:.2f}" for value in load)
        if load_end is not None:
            shown += " at the start; " + " / ".join(f"{value:.2f}" for value in load_end)
            shown += " at the end"
        rows.append(["load average (1 / 5 / 15 min)", shown])
    if generators:
        shown = ", ".join(_GENERATORS.get(generator, generator) for generator in generators)
        rows.append(["load generator", shown])
    if settings.get("studies"):
        rows.append(["studies", ", ".join(settings["studies"])])
    lines += _list_table(["", "this run"], rows)
    changed = _changed_settings(settings)
    if changed:
        lines += _admonition(
            "Not the default settings",
            "This run changed " + _series(changed) + ", so its figures are not those of a "
            f"full run. Rerun ``{REPRODUCE}`` for those.",
        )
    return lines


# -- the studies' tables ------------------------------------------------------------------------


def _cases(study: Study) -> list[Mapping[str, Any]]:
    return list(study["cases"])


def _drivers(cases: Iterable[Mapping[str, Any]]) -> list[str]:
    return list(dict.fromkeys(case["driver"] for case in cases))


def _overhead(study: Study, document: Mapping[str, Any]) -> Lines:
    cases = _cases(study)
    rows = []
    for case in cases:
        if case.get("skipped"):
            rows.append(
                [
                    case["driver"],
                    _count(case["idle"]),
                    str(case["ready"]),
                    *([""] * 6),
                    f"skipped: {case['skipped']}",
                ]
            )
            continue
        ns = case["ns_per_call"]
        ratio = case["ratio_to_raw"]
        target = case.get("target_pollkit_ratio")
        passed = case.get("passed")
        rows.append(
            [
                case["driver"],
                _count(case["idle"]),
                str(case["ready"]),
                _us(ns["raw"]["median"]),
                _with_spread(ns["pollkit"], _us) if "pollkit" in ns else "-",
                _with_spread(ratio["pollkit"], _ratio) if "pollkit" in ratio else "-",
                _with_spread(ratio["wrapper"], _ratio) if "wrapper" in ratio else "-",
                _with_spread(ratio["selectors"], _ratio) if "selectors" in ratio else "-",
                "-" if target is None else f"<= {target:.2f}",
                {None: "", True: "met", False: "missed"}[passed],
            ]
        )
    header = [
        "driver",
        "idle fds",
        "ready fds",
        "raw µs",
        "pollkit µs",
        "pollkit / raw",
        "wrapper / raw",
        "selectors / raw",
        "budget",
        "",
    ]
    note = _rounds_note(case["rounds"] for case in cases if not case.get("skipped"))
    return [
        *_paragraph(
            "One ``poll(0)`` on each driver, per contender; ratios are the median of each "
            "round's own ratio to the raw call.",
            note,
        ),
        *_list_table(header, rows),
    ]


def _scaling(study: Study, document: Mapping[str, Any]) -> Lines:
    cases = _cases(study)
    drivers = _drivers(cases)
    by_key = {(case["driver"], case["idle"]): case for case in cases}
    contenders = ("pollkit", "raw", "selectors")
    header = ["idle fds", *(f"{d} {c}" for d in drivers for c in contenders)]
    rows = []
    reasons: dict[str, str] = {}
    for idle in sorted({case["idle"] for case in cases}):
        row = [_count(idle)]
        for driver in drivers:
            case = by_key.get((driver, idle))
            if case is None or case.get("skipped"):
                if case is not None:
                    reasons[driver] = case["skipped"]
                row += ["—"] * len(contenders)
                continue
            ns = case["ns_per_call"]
            row.append(_with_spread(ns["pollkit"], _us) if "pollkit" in ns else "-")
            row += [_us(ns[c]["median"]) if c in ns else "-" for c in contenders[1:]]
        rows.append(row)
    note = _rounds_note(case["rounds"] for case in cases if not case.get("skipped"))
    lines = [
        *_paragraph(
            "µs per ``poll(0)`` with N idle fds and 1 ready fd: pollkit's driver, the raw call "
            "and stdlib ``selectors``.",
            note,
        ),
        *_list_table(header, rows),
    ]
    if reasons:
        lines += _paragraph(
            *(f"— on {driver}: not measured, {reason}." for driver, reason in reasons.items())
        )
    return lines


def _not_run(study: Study) -> list[str]:
    """Contenders the whole study left out (a peer that is not installed, say)."""
    return [f"``{name}``: not run, {reason}." for name, reason in study.get("skipped", {}).items()]


def _echo_reference(points: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """The point both sweeps pass through: the most common count and the most common size."""
    connections = Counter(point["connections"] for point in points).most_common(1)[0][0]
    size = Counter(point["size"] for point in points).most_common(1)[0][0]
    return connections, size


def _point(points: Sequence[Mapping[str, Any]], connections: int, size: int) -> Mapping[str, Any]:
    for point in points:
        if point["connections"] == connections and point["size"] == size:
            return point
    raise ValueError(f"the echo study has no point {connections} x {size} B")


def _contender_names(points: Iterable[Mapping[str, Any]]) -> list[str]:
    names: dict[str, None] = {}
    for point in points:
        names.update(dict.fromkeys(point["contenders"]))
        names.update(dict.fromkeys(point.get("skipped", {})))
    return list(names)


def _echo_rows(point: Mapping[str, Any]) -> tuple[list[list[str]], list[str]]:
    rows = []
    notes = []
    for name, entry in point["contenders"].items():
        ratio = entry.get("cpu_per_message_ratio_to_raw")
        rate = entry.get("messages_per_second")
        p50, p99 = entry.get("p50"), entry.get("p99")
        server, client = entry.get("server_utilisation"), entry.get("client_utilisation")
        cpu = entry.get("server_cpu_ns_per_message")
        rows.append(
            [
                f"``{name}``",
                "-" if rate is None else _rate(rate["median"]),
                "-" if p50 is None else _us(p50["median"]),
                "-" if p99 is None else _us(p99["median"]),
                "-" if cpu is None else _with_spread(cpu, _us),
                "-" if ratio is None else _with_spread(ratio, _ratio),
                "-" if server is None else f"{server['median']:.2f}",
                "-" if client is None else f"{client['median']:.2f}",
            ]
        )
        errors = entry.get("errors") or []
        if errors:
            notes.append(
                f"``{name}``: {len(errors)} of {len(entry['rounds'])} rounds failed "
                f"(last: {errors[-1]}); the figures are from the others."
            )
    for name, reason in point.get("skipped", {}).items():
        rows.append([f"``{name}``", *(["—"] * 7)])
        notes.append(f"``{name}``: not measured, {reason}.")
    return rows, notes


def _echo_sweep(
    points: Sequence[Mapping[str, Any]], vary: str, fixed: int, label: Callable[[int], str]
) -> Lines:
    """Server CPU per message of every contender along one sweep; empty for a single point."""
    other = "size" if vary == "connections" else "connections"
    sweep = sorted((p for p in points if p[other] == fixed), key=lambda p: int(p[vary]))
    if len(sweep) < 2:
        return []
    rows = []
    for name in _contender_names(sweep):
        row = [f"``{name}``"]
        for point in sweep:
            cpu = point["contenders"].get(name, {}).get("server_cpu_ns_per_message")
            row.append("—" if cpu is None else _us(cpu["median"]))
        rows.append(row)
    return _list_table(["", *(label(point[vary]) for point in sweep)], rows)


def _size(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} KiB"
    return f"{size} B"


def _echo(study: Study, document: Mapping[str, Any]) -> Lines:
    points = study["points"]
    connections, size = _echo_reference(points)
    rows, notes = _echo_rows(_point(points, connections, size))
    generator = str(study.get("generator", "?"))
    header = [
        "server",
        "messages/s",
        "p50 µs",
        "p99 µs",
        "server CPU µs/message",
        "CPU / raw-epoll's",
        "server CPU use",
        "load generator CPU use",
    ]
    rounds = [len(entry["rounds"]) for point in points for entry in point["contenders"].values()]
    lines = [
        *_paragraph(
            f"{_count(connections)} connections {_TIMES} {_size(size)}, every server pinned to one "
            f"CPU and the load generator, {_GENERATORS.get(generator, generator)}, to another.",
            _rounds_note(rounds),
            "CPU use is the fraction of the measured window each process spent on a CPU: a load "
            "generator near 1.00 was itself the limit, and the server's messages/s then says "
            "more about the generator than about the server.",
        ),
        *_list_table(header, rows),
    ]
    notes += _not_run(study)
    if notes:
        lines += _paragraph(*notes)
    by_connections = _echo_sweep(points, "connections", size, _count)
    if by_connections:
        lines += _paragraph(f"Server CPU µs per message by connections, at {_size(size)}:")
        lines += by_connections
    by_size = _echo_sweep(points, "size", connections, _size)
    if by_size:
        lines += _paragraph(
            f"Server CPU µs per message by message size, at {_count(connections)} connections:"
        )
        lines += by_size
    return lines


def _memory(study: Study, document: Mapping[str, Any]) -> Lines:
    results = study["results"]
    counts = sorted({result["connections"] for result in results})
    names = list(dict.fromkeys(result["contender"] for result in results))
    cells = {(result["contender"], result["connections"]): result for result in results}
    rows = []
    notes = {}
    for name in names:
        row = [f"``{name}``"]
        for count in counts:
            result = cells.get((name, count))
            rss = None if result is None else result.get("rss_bytes_per_connection")
            if result is not None and result.get("skipped"):
                notes[name] = f"``{name}``: — not measured, {result['skipped']}."
            elif result is not None and result.get("errors"):
                notes[name] = f"``{name}``: failed rounds, last: {result['errors'][-1]}."
            row.append("—" if rss is None else _with_spread(rss, _bytes))
        rows.append(row)
    warm = sorted({result["warm"] for result in results})
    rounds = [len(result["rounds_rss"]) for result in results if result.get("rounds_rss")]
    lines = [
        *_paragraph(
            "Server RSS growth in bytes per held idle connection, from "
            f"{_series([_count(w) for w in warm])} held connections to N.",
            _rounds_note(rounds),
        ),
        *_list_table(["server", *(f"{_count(count)} connections" for count in counts)], rows),
    ]
    shown = [*notes.values(), *_not_run(study)]
    if shown:
        lines += _paragraph(*shown)
    return lines


def _worker_count(name: str) -> int:
    """``workers-3`` -> 3."""
    return int(name.rsplit("-", 1)[1])


def _workers(study: Study, document: Mapping[str, Any]) -> Lines:
    rows = []
    rounds = []
    for point in study["points"]:
        for name, entry in point["contenders"].items():
            rate, cpu = entry.get("messages_per_second"), entry.get("server_cpu_ns_per_message")
            p50, p99 = entry.get("p50"), entry.get("p99")
            client = entry.get("client_utilisation")
            rounds.append(len(entry["rounds"]))
            rows.append(
                [
                    str(_worker_count(name)),
                    "-" if rate is None else _with_spread(rate, _rate),
                    "-" if cpu is None else _with_spread(cpu, _us),
                    "-" if p50 is None else _us(p50["median"]),
                    "-" if p99 is None else _us(p99["median"]),
                    "-" if client is None else f"{client['median']:.2f}",
                ]
            )
    cpus = study.get("cpus", "?")
    header = [
        "workers",
        "messages/s",
        "server CPU µs/message (all workers)",
        "p50 µs",
        "p99 µs",
        "load generator CPU use",
    ]
    return [
        *_paragraph(
            f"``pollkit echo --workers N`` on {study.get('backend', '?')}, 50 connections {_TIMES} "
            "1 KiB, nothing pinned.",
            _rounds_note(rounds),
            f"This machine has {cpus} CPUs and the load generator needs one of them, so more "
            "workers than the CPUs it leaves cannot add throughput: on a machine this small the "
            "study shows what extra workers cost, not how far they scale.",
        ),
        *_list_table(header, rows),
    ]


_STUDY_TABLES: dict[str, Callable[[Study, Mapping[str, Any]], Lines]] = {
    "overhead": _overhead,
    "scaling": _scaling,
    "echo": _echo,
    "memory": _memory,
    "workers": _workers,
}


def _targets(document: Mapping[str, Any]) -> Lines:
    targets = document.get("targets")
    if targets is None:
        return _admonition(
            "No targets",
            "The committed run stopped before it checked the targets. Rerun "
            f"``{REPRODUCE}`` to the end.",
        )
    if not targets:
        return _paragraph("This run measured none of the points the targets are set for.")

    def show(value: float) -> str:
        return f"{value:.3f}" if value < 100 else f"{value:,.0f}"

    rows = [
        [
            target["target"],
            show(target["limit"]),
            f"{show(target['measured'])} [{show(target['spread'][0])}-{show(target['spread'][1])}]",
            "met" if target["met"] else "**missed**",
        ]
        for target in targets
    ]
    met = sum(1 for target in targets if target["met"])
    return [
        *_paragraph(f"{met} of {len(targets)} targets met in this run (medians [p25-p75])."),
        *_list_table(["target", "limit", "measured", ""], rows),
    ]


# -- the advice ---------------------------------------------------------------------------------


def _scaling_series(cases: Iterable[Mapping[str, Any]], driver: str) -> list[tuple[int, float]]:
    """``(idle fds, median ns)`` of pollkit's ``poll(0)`` on ``driver``, by fd count."""
    return sorted(
        (int(case["idle"]), float(case["ns_per_call"]["pollkit"]["median"]))
        for case in cases
        if case["driver"] == driver and not case.get("skipped") and "pollkit" in case["ns_per_call"]
    )


def _growth_sentence(driver: str, series: Sequence[tuple[int, float]]) -> str:
    (first_n, first), (last_n, last) = series[0], series[-1]
    growth = last / first
    span = f"from {_count(first_n)} to {_count(last_n)} idle fds"
    costs = f"{_us_unit(first)} → {_us_unit(last)} per ``poll(0)`` with one ready fd"
    if growth < _FLAT:
        return f"**{driver}** stays flat {span}: {costs}."
    return f"**{driver}** grows {_times(growth)} {span}: {costs}."


def _advice_scaling(study: Study) -> list[str]:
    cases = _cases(study)
    epoll = dict(_scaling_series(cases, "epoll"))
    bullets = []
    if len(epoll) >= 2:
        bullets.append(_growth_sentence("epoll", sorted(epoll.items())))
    poll = _scaling_series(cases, "poll")
    if len(poll) >= 2:
        sentence = _growth_sentence("poll", poll)
        shared = [(n, ns / epoll[n]) for n, ns in poll if n in epoll]
        if shared:
            matched = 0
            for n, ratio in shared:
                if ratio > _POLL_MATCHES_EPOLL:
                    break
                matched = n
            limit = f"within {(_POLL_MATCHES_EPOLL - 1) * 100:.0f} % of epoll's cost"
            if matched == shared[-1][0]:
                sentence += f" It stays {limit} at every size measured."
            elif matched:
                beyond = next((n, r) for n, r in shared if n > matched)
                sentence += (
                    f" It stays {limit} up to {_count(matched)} idle fds; at "
                    f"{_count(beyond[0])} it costs {_times(beyond[1])} epoll's, and at "
                    f"{_count(shared[-1][0])} {_times(shared[-1][1])}."
                )
            else:
                sentence += (
                    f" It costs {_times(shared[0][1])} epoll's already at "
                    f"{_count(shared[0][0])} idle fds and {_times(shared[-1][1])} at "
                    f"{_count(shared[-1][0])}."
                )
        bullets.append(sentence)
    select = _scaling_series(cases, "select")
    if select:
        walled = sorted(
            int(case["idle"])
            for case in cases
            if case["driver"] == "select" and case.get("skipped")
        )
        sentence = (
            _growth_sentence("select", select)
            if len(select) >= 2
            else f"**select** costs {_us_unit(select[0][1])} with {_count(select[0][0])} idle fds."
        )
        wall = (
            f" Then it hits the wall: ``FD_SETSIZE`` is {_count(FD_SETSIZE)}, select cannot "
            f"watch an fd numbered {_count(FD_SETSIZE)} or above, and pollkit's select driver "
            "refuses one with ``FdOutOfRangeError``"
        )
        if walled:
            wall += (
                f"; the study could not measure it with {_series([_count(n) for n in walled])} "
                f"idle fds, whose fd numbers would reach {_count(FD_SETSIZE)}"
            )
        bullets.append(sentence + wall + ".")
    return bullets


def _advice_overhead(study: Study) -> list[str]:
    measured = [
        case
        for case in _cases(study)
        if not case.get("skipped") and "pollkit" in case["ratio_to_raw"]
    ]
    if not measured:
        return []
    by_key = {(case["driver"], int(case["ready"])): case for case in measured}
    ready_counts = sorted({ready for _, ready in by_key})
    clauses = []
    for driver in _drivers(measured):
        parts = []
        for ready in ready_counts:
            case = by_key.get((driver, ready))
            if case is None:
                continue
            ns = case["ns_per_call"]
            extra = ns["pollkit"]["median"] - ns["raw"]["median"]
            sign = "+" if extra >= 0 else _MINUS
            ratio = _times(case["ratio_to_raw"]["pollkit"]["median"])
            parts.append(f"{ratio} ({sign}{_us_unit(abs(extra))}) with {_ready(ready)}")
        clauses.append(f"on {driver} {_series(parts)}")
    sentence = (
        "**What pollkit costs over the raw calls:** one ``poll(0)`` through pollkit costs, "
        f"relative to the ``select`` module's own call, {'; '.join(clauses)}."
    )
    ready = ready_counts[0]
    selectors = [
        f"{_times(case['ratio_to_raw']['selectors']['median'])} on {case['driver']}"
        for case in measured
        if case["ready"] == ready and "selectors" in case["ratio_to_raw"]
    ]
    if selectors:
        sentence += f" The stdlib's ``selectors`` costs {_series(selectors)} with {_ready(ready)}."
    return [sentence]


def _paired_ratio(
    point: Mapping[str, Any], name: str, base: str, key: str = "server_cpu_ns_per_message"
) -> float | None:
    """The median of each round's ``name / base`` ratio of ``key``, as the study takes ratios.

    Rounds alternate, so round i of every contender ran side by side; a round
    that failed on either side is left out.  ``None`` when no round pairs up.
    """
    contenders = point["contenders"]
    if name not in contenders or base not in contenders:
        return None
    ratio = paired_ratio(contenders[name]["rounds"], contenders[base]["rounds"], key)
    return None if ratio is None else ratio.median


def _cpu(point: Mapping[str, Any], name: str) -> float | None:
    entry = point["contenders"].get(name)
    return None if entry is None else _median(entry.get("server_cpu_ns_per_message"))


def _advice_echo(study: Study) -> list[str]:
    points = study["points"]
    connections, size = _echo_reference(points)
    point = _point(points, connections, size)
    mine = _cpu(point, "pollkit-epoll")
    if mine is None:
        return []
    where = f"{_count(connections)} connections {_TIMES} {_size(size)}"
    sentence = (
        f"**Echo server CPU per message** ({where}): pollkit on epoll spends {_us_unit(mine)}"
    )
    comparisons = []
    for name, label in _PEER_NAMES.items():
        theirs = _cpu(point, name)
        ratio = _paired_ratio(point, "pollkit-epoll", name)
        if theirs is not None and ratio is not None:
            comparisons.append(f"{_times(ratio)} {_possessive(label)} {_us_unit(theirs)}")
    if comparisons:
        sentence += ": " + _series(comparisons)
    sentence += "."
    others = [
        f"{driver} {_us_unit(cpu)}"
        for driver in ("poll", "select")
        if (cpu := _cpu(point, f"pollkit-{driver}")) is not None
    ]
    if others:
        sentence += f" pollkit's other drivers at this point: {_series(others)}."
    bullets = [sentence]
    largest = max(
        (p for p in points if p["size"] == size and p["connections"] > connections),
        key=lambda p: int(p["connections"]),
        default=None,
    )
    if largest is not None:
        epoll_cpu = _cpu(largest, "pollkit-epoll")
        poll_cpu = _cpu(largest, "pollkit-poll")
        ratio = _paired_ratio(largest, "pollkit-poll", "pollkit-epoll")
        if epoll_cpu is not None and poll_cpu is not None and ratio is not None:
            text = (
                f"At {_count(largest['connections'])} connections pollkit needs "
                f"{_us_unit(epoll_cpu)} per message on epoll and {_us_unit(poll_cpu)} on poll "
                f"({_times(ratio)} epoll's)"
            )
            if "pollkit-select" in largest.get("skipped", {}):
                text += "; select cannot hold that many connections"
            bullets.append(text + ".")
    return bullets


def _advice_memory(study: Study) -> list[str]:
    largest: dict[str, tuple[int, float]] = {}
    for result in study["results"]:
        rss = _median(result.get("rss_bytes_per_connection"))
        seen = largest.get(result["contender"], (0, 0.0))
        if rss is not None and result["connections"] >= seen[0]:
            largest[result["contender"]] = (int(result["connections"]), rss)
    if "pollkit-epoll" not in largest:
        return []
    count, mine = largest.pop("pollkit-epoll")
    order = ["pollkit-poll", "pollkit-select", *_PEER_NAMES]
    parts = []
    for name, (n, rss) in sorted(
        largest.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)
    ):
        label = _PEER_NAMES.get(name, name.replace("pollkit-", "pollkit on "))
        at = "" if n == count else f" (at {_count(n)})"
        parts.append(f"{label} {_bytes(rss)} B{at}")
    sentence = (
        f"**Memory per held idle connection** at {_count(count)} connections: pollkit on epoll "
        f"{_bytes(mine)} B"
    )
    if parts:
        sentence += "; " + _series(parts)
    return [sentence + "."]


def _advice_workers(study: Study) -> list[str]:
    bullets = []
    for point in study["points"]:
        rates = sorted(
            (_worker_count(name), name, rate)
            for name, entry in point["contenders"].items()
            if (rate := _median(entry.get("messages_per_second"))) is not None
        )
        if len(rates) < 2:
            continue
        (first_n, first_name, first), (last_n, last_name, last) = rates[0], rates[-1]
        ratio = _paired_ratio(point, last_name, first_name, "messages_per_second")
        bullets.append(
            f"**More workers** on this {study.get('cpus', '?')}-CPU machine: "
            f"{first_n} worker{'s' if first_n > 1 else ''} echoed {_rate(first)} messages/s, "
            f"{last_n} workers {_rate(last)}"
            + ("" if ratio is None else f" ({_times(ratio)})")
            + ". The load generator shares the CPUs, so this machine cannot show how "
            "``--workers`` scales, only what extra workers cost here."
        )
    return bullets


def _advice(document: Mapping[str, Any]) -> Lines:
    studies = document["studies"]
    advisers: dict[str, Callable[[Study], list[str]]] = {
        "scaling": _advice_scaling,
        "overhead": _advice_overhead,
        "echo": _advice_echo,
        "memory": _advice_memory,
        "workers": _advice_workers,
    }
    bullets = []
    for name, adviser in advisers.items():
        if name in studies:
            bullets += adviser(studies[name])
    if not bullets:
        return _admonition(
            "Nothing measured to advise from",
            f"The committed run has no usable results. Run ``{REPRODUCE}`` and rebuild.",
        )
    lines = []
    for bullet in bullets:
        lines += [f"* {bullet}", ""]
    return lines
