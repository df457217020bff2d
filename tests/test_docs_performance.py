"""The Performance page renders from what ``pollkit bench --json`` writes.

``docs/_ext/pollkit_bench_render.py`` turns the committed results into the
page's tables and advice.  These tests feed it a synthetic document built by
the same ``as_dict()`` methods ``pollkit bench`` uses, with made-up figures,
so a change to the results' shape breaks them here instead of breaking the
docs build, or worse, the page.  They check structure and that the page
quotes the document's figures; no timing is measured.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from pollkit.bench.cli import STUDIES, Settings, _targets
from pollkit.bench.echo import EchoPoint, MemoryResult
from pollkit.bench.overhead import TARGETS, CaseResult
from pollkit.bench.report import machine_info
from pollkit.bench.stats import Spread, summarize

EXT = Path(__file__).resolve().parent.parent / "docs" / "_ext"


def _load_renderer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "pollkit_bench_render", EXT / "pollkit_bench_render.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_module = _load_renderer()
render = render_module.render
KINDS: tuple[str, ...] = render_module.KINDS
REPRODUCE: str = render_module.REPRODUCE

SCALING_FDS = (10, 100, 1000, 10000)

#: What the page writes after a ratio (named: a literal one looks like the letter x).
X = "\N{MULTIPLICATION SIGN}"


def _spread(*values: float) -> Spread:
    return summarize(values)


def _case(driver: str, idle: int, ready: int, raw_ns: float, pollkit_ns: float) -> CaseResult:
    case = CaseResult(driver, idle, ready, calls_per_round=100, rounds=3, target=TARGETS.get(ready))
    case.ns_per_call = {
        "raw": _spread(raw_ns, raw_ns, raw_ns),
        "pollkit": _spread(pollkit_ns * 0.9, pollkit_ns, pollkit_ns * 1.1),
        "selectors": _spread(2 * raw_ns, 2 * raw_ns, 2 * raw_ns),
    }
    case.ratio_to_raw = {
        "pollkit": _spread(pollkit_ns / raw_ns, pollkit_ns / raw_ns, pollkit_ns / raw_ns),
        "selectors": _spread(2.0, 2.0, 2.0),
    }
    return case


def _scaling() -> list[CaseResult]:
    """epoll flat at 1 µs; poll and select 1 µs per 10 fds; select walled at 1,024."""
    cases = []
    for driver in ("epoll", "poll", "select"):
        for idle in SCALING_FDS:
            if driver == "select" and idle >= 1000:
                skipped = CaseResult(driver, idle, 1)
                skipped.skipped = "select cannot watch fds >= FD_SETSIZE (1024)"
                cases.append(skipped)
                continue
            ns = 1000.0 if driver == "epoll" else 100.0 * idle
            cases.append(_case(driver, idle, 1, ns, ns))
    return cases


def _round(cpu_ns: float, rate: float) -> dict[str, Any]:
    """One load generator result, in the shape ``pollkit.bench.echo`` records it."""
    return {
        "messages_per_second": rate,
        "server_cpu_ns_per_message": cpu_ns,
        "server_utilisation": 0.95,
        "client_utilisation": 0.8,
        "latency_ns": {"p50": 100_000.0, "p99": 300_000.0},
    }


def _echo_point(connections: int, size: int) -> EchoPoint:
    cpu = {
        "raw-epoll": 10_000.0,
        "pollkit-epoll": 10_000.0,
        "pollkit-poll": 20_000.0,
        "pollkit-select": 30_000.0,
        "uvloop-protocol": 12_500.0,
        "asyncio-protocol": 20_000.0,
    }
    point = EchoPoint(connections, size)
    for name, ns in cpu.items():
        if name == "pollkit-select" and connections > 1000:
            point.skipped[name] = "select cannot watch fds >= FD_SETSIZE (1024)"
            continue
        point.rounds[name] = [_round(ns, 1e9 / ns) for _ in range(3)]
    return point


def _memory() -> list[MemoryResult]:
    results = []
    for name, per_connection in (("pollkit-epoll", 300.0), ("raw-epoll", 100.0)):
        for count in (1000, 5000):
            results.append(
                MemoryResult(name, count, 50, [per_connection] * 2, [per_connection] * 2)
            )
    walled = MemoryResult("pollkit-select", 5000, 50)
    walled.skipped = "select cannot watch fds >= FD_SETSIZE (1024)"
    return [*results, MemoryResult("pollkit-select", 1000, 50, [400.0], [400.0]), walled]


def _workers() -> EchoPoint:
    point = EchoPoint(50, 1024)
    point.rounds = {
        "workers-1": [_round(10_000.0, 50_000.0)] * 3,
        "workers-2": [_round(12_000.0, 40_000.0)] * 3,
    }
    return point


def _document(studies: tuple[str, ...] = STUDIES) -> dict[str, Any]:
    """A results document as ``pollkit bench`` writes it, through JSON and back."""
    every = {
        "overhead": {
            "cases": [
                _case(driver, 500 if driver == "select" else 1000, ready, 1000.0, 1100.0).as_dict()
                for driver in ("epoll", "poll", "select")
                for ready in (1, 64)
            ]
        },
        "scaling": {"cases": [case.as_dict() for case in _scaling()]},
        "echo": {
            "generator": "c",
            "contenders": {},
            "skipped": {},
            "points": [
                _echo_point(connections, size).as_dict()
                for connections, size in ((1, 1024), (50, 1024), (5000, 1024), (50, 64))
            ],
        },
        "memory": {"skipped": {}, "results": [result.as_dict() for result in _memory()]},
        "workers": {
            "backend": "epoll",
            "cpus": 2,
            "generator": "c",
            "points": [_workers().as_dict()],
        },
    }
    chosen = {name: every[name] for name in studies}
    settings = {**Settings().__dict__, "backends": ["epoll", "poll", "select"]}
    document = {
        "machine": machine_info(),
        "settings": {**settings, "studies": list(studies)},
        "studies": chosen,
        # What `pollkit bench` itself concludes from these studies.
        "targets": _targets(chosen),
        "seconds": 600.0,
    }
    parsed: dict[str, Any] = json.loads(json.dumps(document))
    return parsed


def _text(kind: str, document: Any, **options: Any) -> str:
    lines = render(kind, document, **options)
    assert isinstance(lines, list)
    assert all(isinstance(line, str) for line in lines)
    return "\n".join(lines)


@pytest.mark.parametrize("kind", KINDS)
def test_every_part_renders_from_a_full_run(kind: str) -> None:
    text = _text(kind, _document())
    assert text.strip()
    assert ".. admonition::" not in text  # a full default run has nothing to warn about


@pytest.mark.parametrize("kind", KINDS)
def test_without_results_every_part_says_how_to_make_them(kind: str) -> None:
    text = _text(kind, None, results_path="docs/_static/bench/results.json")
    assert ".. admonition:: No benchmark results committed" in text
    assert "docs/_static/bench/results.json" in text
    assert REPRODUCE in text


def test_the_reproduce_command_writes_where_the_page_reads() -> None:
    assert REPRODUCE.split() == [
        "pollkit",
        "bench",
        "--plot",
        "docs/_static/bench",
        "--json",
        render_module.RESULTS_PATH,
    ]


def test_a_study_the_run_left_out_is_named() -> None:
    document = _document(("overhead", "scaling"))
    text = _text("echo", document)
    assert ".. admonition:: No echo results" in text
    assert "``echo``" in text
    advice = _text("advice", document)
    assert "Echo server CPU" not in advice
    assert "**epoll** stays flat" in advice


def test_scaling_table_has_a_row_per_fd_count_and_marks_the_select_wall() -> None:
    text = _text("scaling", _document())
    for driver in ("epoll", "poll", "select"):
        assert f"- {driver} pollkit" in text
    rows = [line for line in text.splitlines() if line.startswith("   * - ") and line[7].isdigit()]
    assert [row[7:] for row in rows] == ["10", "100", "1,000", "10,000"]
    assert "—" in text
    assert "not measured, select cannot watch fds >= FD_SETSIZE (1024)" in text


def test_a_plot_follows_its_table_only_when_it_exists() -> None:
    document = _document()
    with_plot = _text("scaling", document, figures={"scaling": "/_static/bench/scaling.png"})
    assert ".. figure:: /_static/bench/scaling.png" in with_plot
    assert ".. figure::" not in _text("scaling", document)
    assert ".. figure::" not in _text("echo", document, figures={"scaling": "/x.png"})


def test_echo_tables_cover_the_reference_point_and_both_sweeps() -> None:
    text = _text("echo", _document())
    assert f"50 connections {X} 1 KiB" in text
    assert "by connections, at 1 KiB" in text
    assert "by message size, at 50 connections" in text
    assert "``pollkit-select``: not measured" not in text  # measured at the reference point
    assert "- 5,000" in text


def test_a_peer_that_was_not_run_is_named() -> None:
    document = _document()
    for study in ("echo", "memory"):
        document["studies"][study]["skipped"] = {"uvloop-protocol": "uvloop is not installed"}
        text = _text(study, document)
        assert "``uvloop-protocol``: not run, uvloop is not installed." in text


def test_machine_names_the_cores_and_flags_changed_settings() -> None:
    document = _document()
    text = _text("machine", document)
    assert f"this {document['machine']['cpu_count']}-core machine" in text
    assert "which took 10 minutes" in text
    document["settings"]["echo_rounds"] = 1
    changed = _text("machine", document)
    assert ".. admonition:: Not the default settings" in changed
    assert f"``echo_rounds=1`` (default {Settings().echo_rounds})" in changed


def test_the_advice_quotes_the_results() -> None:
    advice = _text("advice", _document())
    assert "**epoll** stays flat from 10 to 10,000 idle fds: 1.00 µs → 1.00 µs" in advice
    assert f"**poll** grows 1,000{X} from 10 to 10,000 idle fds: 1.00 µs → 1,000 µs" in advice
    assert f"within 25 % of epoll's cost up to 10 idle fds; at 100 it costs 10{X}" in advice
    assert f"**select** grows 10{X} from 10 to 100 idle fds" in advice
    assert "could not measure it with 1,000 and 10,000 idle fds" in advice
    assert f"on epoll 1.10{X} (+0.10 µs) with 1 ready fd" in advice
    assert f"pollkit on epoll spends 10.0 µs: 1.00{X} the hand-written raw epoll loop's" in advice
    assert f"0.80{X} uvloop Protocol's 12.5 µs" in advice
    assert "At 5,000 connections" in advice
    assert f"(2.00{X} epoll's); select cannot hold that many connections" in advice
    assert "at 5,000 connections: pollkit on epoll 300 B" in advice
    assert "pollkit on select 400 B (at 1,000)" in advice
    assert f"2 workers 40,000 (0.80{X})" in advice


def test_targets_say_which_were_met() -> None:
    text = _text("targets", _document())
    # 1.1x the raw call meets the 1.15 budget (1 ready fd) and misses 1.05 (64 ready fds).
    assert text.count("**missed**") == 3
    assert "met in this run" in text


def test_a_document_of_another_shape_is_refused() -> None:
    with pytest.raises(KeyError):
        render("scaling", {"studies": {"scaling": {}}})
    with pytest.raises(ValueError, match="unknown kind 'speed'"):
        render("speed", _document())


@pytest.mark.parametrize("kind", KINDS)
def test_the_output_is_restructuredtext_docutils_accepts(kind: str) -> None:
    core = pytest.importorskip("docutils.core")
    text = _text(kind, _document(), figures={study: f"{study}.png" for study in STUDIES})
    # halt_level 2: any warning (a malformed table, say) raises instead of passing quietly.
    core.publish_doctree(text, settings_overrides={"halt_level": 2, "report_level": 5})


@pytest.mark.timeout(240)
def test_the_directive_builds_with_and_without_results(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    source = tmp_path / "docs"
    source.mkdir()
    (source / "conf.py").write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(EXT)!r})
            extensions = ["pollkit_bench_docs"]
            """
        )
    )
    pages = "".join(f".. pollkit-bench:: {kind}\n\n" for kind in KINDS)
    (source / "index.rst").write_text(f"Performance\n===========\n\n{pages}")

    def build() -> subprocess.CompletedProcess[str]:
        """A fresh ``sphinx-build -W -n`` (warnings are errors, as in ``tox -e docs``)."""
        command = [sys.executable, "-m", "sphinx", "-W", "-n", "-q", "-E", "-b", "html"]
        return subprocess.run(
            [*command, str(source), str(tmp_path / "html")],
            capture_output=True,
            text=True,
            timeout=150,
            check=False,
        )

    def page() -> str:
        return (tmp_path / "html" / "index.html").read_text(encoding="utf-8")

    done = build()
    assert done.returncode == 0, done.stderr
    assert "No benchmark results committed" in page()

    results = source / "_static" / "bench"
    results.mkdir(parents=True)
    (results / "results.json").write_text(json.dumps(_document()))
    done = build()
    assert done.returncode == 0, done.stderr
    assert "No benchmark results committed" not in page()
    assert "stays flat from 10 to 10,000 idle fds" in page()
    assert "results.json" in page()  # the download link

    (results / "results.json").write_text('{"machine": {}, "studies": {"scaling": {}}}')
    done = build()
    assert done.returncode != 0
    assert "cannot render 'scaling' (KeyError: 'cases')" in done.stderr
