"""``pollkit bench`` runs end to end on tiny sizes; only the structure of its output is checked.

Timings are never asserted: these tests prove the command works (studies run,
tables print, the JSON has every figure, plots are written), not how fast
anything is.  Each runs one driver: the one ``POLLKIT_BACKEND`` forces, else
epoll, so every tox environment exercises its own.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pollkit import EpollPoller, Events
from pollkit.bench.breakdown import _Replica, breakdown_table, run_breakdown
from pollkit.bench.cli import STUDIES, Settings, _targets, main
from pollkit.bench.echo import CPU_TARGET_POINT, EchoPoint, _rounds_at, c_generator
from pollkit.bench.overhead import FdSet
from pollkit.bench.stats import percentile, summarize

BACKEND = os.environ.get("POLLKIT_BACKEND") or "epoll"
SPREAD_KEYS = {"median", "p25", "p75", "min", "max", "n", "relative_iqr"}


def run_bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pollkit", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def load(path: Path) -> dict[str, Any]:
    with open(path) as file:
        data: dict[str, Any] = json.load(file)
    return data


def test_summarize_reports_median_quartiles_and_extremes() -> None:
    spread = summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (spread.median, spread.p25, spread.p75, spread.min, spread.max, spread.n) == (
        3.0,
        2.0,
        4.0,
        1.0,
        5.0,
        5,
    )
    assert spread.relative_iqr == pytest.approx(2.0 / 3.0)
    assert percentile([10.0, 20.0], 0.5) == 15.0
    with pytest.raises(ValueError, match="no values"):
        summarize([])


@pytest.mark.timeout(120)
def _cpu_rounds(values: list[float]) -> list[dict[str, Any]]:
    return [{"server_cpu_ns_per_message": value} for value in values]


def _versus_uvloop(point: EchoPoint) -> dict[str, Any]:
    (target,) = [
        t for t in _targets({"echo": {"points": [point.as_dict()]}}) if "uvloop" in t["target"]
    ]
    return target


def test_below_uvloop_is_judged_round_by_round_not_by_medians() -> None:
    # Round i of each contender ran side by side.  pollkit beats uvloop in two
    # rounds of three, so it is below uvloop, although its median (14) is
    # above uvloop's (13).
    point = EchoPoint(*CPU_TARGET_POINT)
    point.rounds = {
        "raw-epoll": _cpu_rounds([10.0, 14.0, 20.0]),
        "pollkit-epoll": _cpu_rounds([10.0, 14.0, 20.0]),
        "uvloop-protocol": _cpu_rounds([11.0, 13.0, 21.0]),
    }
    versus = _versus_uvloop(point)
    assert versus["limit"] == 1.0
    assert versus["measured"] == pytest.approx(20 / 21)
    assert versus["met"] is True
    # A round that failed on either side is left out of the pairs.
    point.rounds["uvloop-protocol"][0]["error"] = "the server exited"
    assert _versus_uvloop(point)["measured"] == pytest.approx((14 / 13 + 20 / 21) / 2)
    point.rounds["pollkit-epoll"] = _cpu_rounds([12.0, 14.0, 22.0])
    assert _versus_uvloop(point)["met"] is False


def test_the_target_point_gets_its_own_round_count() -> None:
    assert _rounds_at(CPU_TARGET_POINT, 7, 15) == 15
    assert _rounds_at((500, 1024), 7, 15) == 7
    assert _rounds_at(CPU_TARGET_POINT, 7, None) == 7
    assert Settings().echo_target_rounds > Settings().echo_rounds


def test_quick_overhead_and_scaling_write_every_case(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "bench.json"
    status = main(
        [
            *("overhead", "scaling", "--quick", "--rounds", "2", "--idle", "40"),
            *("--scaling-fds", "10,20", "--backends", BACKEND, "--json", str(output), "--quiet"),
        ]
    )
    assert status == 0
    printed = capsys.readouterr()
    assert "pollkit/raw" in printed.out
    assert printed.err == ""

    document = load(output)
    assert set(document) >= {"machine", "settings", "studies", "targets", "seconds"}
    cases = document["studies"]["overhead"]["cases"]
    assert [(c["driver"], c["ready"]) for c in cases] == [(BACKEND, 1), (BACKEND, 64)]
    for case in cases:
        assert case["skipped"] is None
        assert case["rounds"] == 2
        assert case["calls_per_round"] >= 10
        assert set(case["ns_per_call"]) == {"raw", "pollkit", "selectors", "wrapper"}
        assert set(case["ratio_to_raw"]) == {"pollkit", "selectors", "wrapper"}
        for spread in [*case["ns_per_call"].values(), *case["ratio_to_raw"].values()]:
            assert set(spread) == SPREAD_KEYS
            assert spread["n"] == 2
        assert isinstance(case["passed"], bool)
    scaling = document["studies"]["scaling"]["cases"]
    assert [(c["driver"], c["idle"]) for c in scaling] == [(BACKEND, 10), (BACKEND, 20)]
    assert all(set(c["ns_per_call"]) == {"raw", "pollkit", "selectors"} for c in scaling)
    targets = document["targets"]
    assert [t["target"] for t in targets] == [
        f"poll(0) pollkit/raw, {BACKEND}, 1 ready",
        f"poll(0) pollkit/raw, {BACKEND}, 64 ready",
    ]
    assert all(isinstance(t["met"], bool) for t in targets)


def _check_point(point: dict[str, Any], contenders: set[str]) -> None:
    assert (point["connections"], point["size"]) == (2, 64)
    assert set(point["contenders"]) == contenders
    for name, entry in point["contenders"].items():
        assert entry["errors"] == [], (name, entry["errors"])
        assert len(entry["rounds"]) == 1
        measured = entry["rounds"][0]
        assert measured["messages"] > 0
        assert measured["idle_connections"] == 0
        assert measured["server_cpu_stat_seconds"] is not None
        for key in ("messages_per_second", "p50", "p99"):
            assert set(entry[key]) == SPREAD_KEYS


GENERATORS = [
    "python",
    pytest.param(
        "c",
        marks=pytest.mark.skipif(
            shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler"
        ),
    ),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("generator", GENERATORS)
def test_quick_echo_memory_and_workers_through_the_command_line(
    tmp_path: Path, generator: str
) -> None:
    output = tmp_path / "bench.json"
    result = run_bench(
        *("echo", "memory", "workers", "--quick", "--backends", BACKEND, "--peers", "raw-epoll"),
        *("--connections", "2", "--sizes", "64", "--duration", "0.2", "--rounds", "1"),
        *("--memory-connections", "30", "--workers", "1", "--generator", generator),
        *("--json", str(output)),
        timeout=280,
    )
    assert result.returncode == 0, result.stderr
    assert "server CPU us/msg" in result.stdout
    assert "B/conn" in result.stdout
    assert "[bench] echo:" in result.stderr  # progress goes to stderr

    document = load(output)
    echo = document["studies"]["echo"]
    assert echo["generator"] == generator
    mine = f"pollkit-{BACKEND}"
    assert set(echo["contenders"]) == {"raw-epoll", mine}
    (point,) = echo["points"]
    _check_point(point, {"raw-epoll", mine})
    assert point["contenders"]["raw-epoll"]["cpu_per_message_ratio_to_raw"]["median"] == 1.0
    assert point["contenders"]["raw-epoll"]["rounds"][0]["generator"] == generator

    memory = document["studies"]["memory"]["results"]
    assert {(r["contender"], r["connections"]) for r in memory} == {
        ("raw-epoll", 30),
        (mine, 30),
    }
    for entry in memory:
        assert entry["errors"] == []
        assert len(entry["rounds_rss"]) == 1
        assert set(entry["rss_bytes_per_connection"]) == SPREAD_KEYS

    workers = document["studies"]["workers"]
    assert workers["backend"] == BACKEND
    (worker_point,) = workers["points"]
    assert set(worker_point["contenders"]) == {"workers-1"}
    assert worker_point["contenders"]["workers-1"]["errors"] == []


@pytest.mark.timeout(120)
def test_plot_writes_one_png_per_study(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    result = run_bench(
        *("overhead", "scaling", "--quick", "--rounds", "2", "--idle", "20", "--quiet"),
        *("--scaling-fds", "10", "--backends", BACKEND),
        *("--json", str(tmp_path / "bench.json"), "--plot", str(plots)),
    )
    assert result.returncode == 0, result.stderr
    for name in ("overhead", "scaling"):
        png = plots / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["nosuchstudy"], "unknown study 'nosuchstudy'"),
        (["--connections", "0"], "--connections"),
        (["--sizes", "big"], "--sizes"),
        (["--backends", "kqueue"], "unknown name(s) kqueue"),
        (["--rounds", "-1"], "--rounds"),
        (["--duration", "0"], "--duration"),
    ],
)
def test_a_bad_command_line_is_one_line_on_stderr(args: list[str], complaint: str) -> None:
    result = run_bench(*args, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert complaint in lines[0]


def test_every_study_is_offered() -> None:
    result = run_bench("--help", timeout=60)
    assert result.returncode == 0
    for study in STUDIES:
        assert study in result.stdout


def test_the_c_generator_is_reported_when_it_cannot_be_built(tmp_path: Path) -> None:
    binary, problem = c_generator(compiler=str(tmp_path / "no-such-cc"))
    if binary is not None:  # a binary from an earlier build is already cached
        assert os.access(binary, os.X_OK)
    else:
        assert problem is not None
        assert "no-such-cc" in problem


def test_plot_without_matplotlib_fails_at_once_in_one_line(tmp_path: Path) -> None:
    hide_matplotlib = (
        "import sys; sys.modules['matplotlib'] = None; from pollkit.cli import main; "
        f"sys.exit(main(['bench', 'overhead', '--plot', {str(tmp_path)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", hide_matplotlib],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""  # nothing was measured
    assert result.stderr.strip().splitlines() == [
        "pollkit bench: error: --plot needs matplotlib: pip install 'pollkit[bench]' "
        "(or run without --plot for tables only)"
    ]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_breakdown_times_every_step_of_each_driver() -> None:
    cases = [("epoll", 10, 1), ("poll", 10, 3), ("select", 10, 3)]
    results = run_breakdown(cases, rounds=2, round_seconds=0.0005)
    steps = {
        "epoll": ["raw", "bound", "bare", "arg_checks", "waker_test", "both", "pollkit"],
        "poll": ["raw", "bare_ms", "nval_scan", "pollkit"],
        "select": ["raw", "unpack", "zip_pairs", "table_pairs", "pollkit"],
    }
    assert [(r.driver, r.idle, r.ready) for r in results] == cases
    for result in results:
        assert list(result.ns_per_call) == steps[result.driver]
        assert list(result.ratio_to_raw) == steps[result.driver][1:]  # raw is the yardstick
        assert all(spread.n == 2 for spread in result.ns_per_call.values())
        assert "pollkit" in breakdown_table([result])


def test_breakdown_replicas_return_what_the_drivers_return() -> None:
    with FdSet(6, 3) as fdset:
        kernel = select.epoll()
        try:
            for fd in fdset.fds:
                kernel.register(fd, select.EPOLLIN)
            epoll_replica = _Replica(kernel.poll, kernel=kernel)
            with EpollPoller() as poller:
                for fd in fdset.fds:
                    poller.register(fd, Events.READ)
                expected = sorted(poller.poll(0))
            for step in ("bound", "bare", "arg_checks", "waker_test", "both"):
                assert sorted(getattr(epoll_replica, step)(0)) == expected
        finally:
            kernel.close()
        assert expected == [(fd, int(Events.READ)) for fd in sorted(fdset.ready)]

        poll_kernel = select.poll()
        for fd in fdset.fds:
            poll_kernel.register(fd, select.POLLIN)
        poll_replica = _Replica(poll_kernel.poll)
        assert sorted(poll_replica.nval_scan(0)) == expected
        assert sorted(poll_replica.bare_ms(0)) == expected

        select_replica = _Replica(select.select, fdset.fds)
        assert sorted(select_replica.zip_pairs(0)) == expected
        assert sorted(select_replica.table_pairs(0)) == expected
        assert sorted(select_replica.unpack(0)) == sorted(fdset.ready)
