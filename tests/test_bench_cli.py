"""``pollkit bench`` works end to end, and its harness judges targets one way only.

Timings are never asserted: these tests prove the command runs (studies run,
tables print, the JSON holds every figure) on tiny sizes, through the command
line and the harness's public functions.  Each runs one driver: the one
``POLLKIT_BACKEND`` forces, else epoll, so every tox environment exercises its
own (echo with its wrappers too; the ``poll(0)`` studies the bare driver).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pollkit._backends import check_backend_name, parse_backend
from pollkit._select import SelectPoller
from pollkit.bench.cli import STUDIES
from pollkit.bench.harness import judge, paired_ratios, serpentine, summarize, verdict

BACKEND = check_backend_name(os.environ.get("POLLKIT_BACKEND") or "epoll")
#: The overhead study times one driver against its raw call: chaos's faults would skew it.
DRIVER = parse_backend(BACKEND).driver


def run_bench(
    *args: str, cwd: Path | None = None, timeout: float = 100
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pollkit", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_summarize_gives_median_quartiles_and_extremes() -> None:
    assert summarize([5.0, 1.0, 3.0, 2.0, 4.0]) == {
        "median": 3.0, "p25": 2.0, "p75": 4.0, "min": 1.0, "max": 5.0, "n": 5,
    }  # fmt: skip
    assert summarize([10.0, 20.0]) == pytest.approx(
        {"median": 15.0, "p25": 12.5, "p75": 17.5, "min": 10.0, "max": 20.0, "n": 2}
    )
    assert summarize([]) is None


def test_serpentine_rounds_alternate_direction() -> None:
    assert [serpentine("ABC", n) for n in range(3)] == [list("ABC"), list("CBA"), list("ABC")]


def _cpu(*values: float) -> list[dict[str, Any]]:
    return [{"cpu": value} for value in values]


def test_below_a_peer_is_judged_on_paired_rounds_not_on_medians() -> None:
    # Round i of each contender ran side by side.  Ours beats theirs in two
    # rounds of three, so it is below them, although its median (14) is above
    # theirs (13): comparing medians would give the opposite verdict.
    mine, theirs = _cpu(10.0, 14.0, 20.0), _cpu(11.0, 13.0, 21.0)
    judged = judge("mine/theirs", summarize(paired_ratios(mine, theirs, "cpu")), 1.0, below=True)
    assert judged is not None
    assert judged["measured"] == pytest.approx(20 / 21)
    assert judged["met"] is True
    assert verdict(judged) == "met"
    # A round that failed on either side is left out of the pairs.
    theirs[0]["error"] = "the server exited"
    ratios = paired_ratios(mine, theirs, "cpu")
    assert ratios == pytest.approx([14 / 13, 20 / 21])
    judged = judge("mine/theirs", summarize(ratios), 1.0, below=True)
    assert judged is not None
    assert judged["met"] is False
    assert verdict(judged) == "MISSED"


def test_a_limit_is_inclusive_unless_strictly_below_is_asked() -> None:
    exactly = summarize([1.0, 1.0, 1.0])
    at_most, below = judge("at most", exactly, 1.0), judge("below", exactly, 1.0, below=True)
    assert at_most is not None
    assert below is not None
    assert (at_most["met"], below["met"]) == (True, False)
    assert (at_most["rule"], below["rule"]) == ("<=", "<")
    assert judge("nothing measured", None, 1.0) is None
    assert verdict(None) == "-"


@pytest.mark.timeout(120)
def test_quick_overhead_and_scaling_write_every_case(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = run_bench(
        *("overhead", "scaling", "--quick", "--rounds", "2", "--idle", "40"),
        *("--scaling-fds", "10,20", "--backends", DRIVER.upper(), "--json", str(output)),
    )
    assert result.returncode == 0, result.stderr
    assert "pollkit/raw" in result.stdout
    assert "[bench] overhead:" in result.stderr  # progress goes to stderr

    document = load(output)
    assert set(document) >= {"machine", "settings", "studies", "targets", "targets_table"}
    overhead = document["studies"]["overhead"]
    cases = overhead["cases"]
    assert [(c["driver"], c["ready"]) for c in cases] == [(DRIVER, 1), (DRIVER, 64)]
    for case in cases:
        assert case["skipped"] is None
        assert case["rounds"] == 2
        assert set(case["ns_per_call"]) == {"raw", "pollkit"}
        assert case["ratio_to_raw"]["pollkit"]["n"] == 2
    scaling = document["studies"]["scaling"]["cases"]
    assert [(c["driver"], c["idle"]) for c in scaling] == [(DRIVER, 10), (DRIVER, 20)]
    # One judge: the overhead table's verdicts are the targets' verdicts.
    targets = document["targets"]
    assert [t["target"] for t in targets] == [
        f"poll(0) pollkit/raw, {DRIVER}, 1 ready",
        f"poll(0) pollkit/raw, {DRIVER}, 64 ready",
    ]
    assert [row[-1] for row in overhead["table"]["rows"]] == [verdict(t) for t in targets]
    assert [row[-1] for row in document["targets_table"]["rows"]] == [verdict(t) for t in targets]


def quick_echo(tmp_path: Path, spec: str, connections: int) -> tuple[str, dict[str, Any]]:
    """``pollkit bench echo --quick`` at one point: its stdout and the point's JSON."""
    output = tmp_path / "bench.json"
    result = run_bench(
        *("echo", "--quick", "--backends", spec, "--connections", str(connections)),
        *("--duration", "0.2", "--json", str(output)),
    )
    assert result.returncode == 0, result.stderr
    (point,) = load(output)["studies"]["echo"]["points"]
    return result.stdout, point


@pytest.mark.timeout(120)
def test_quick_echo_runs_each_driver_named(tmp_path: Path) -> None:
    stdout, point = quick_echo(tmp_path, BACKEND, 2)
    assert "server CPU us/msg" in stdout
    assert (point["connections"], point["size"]) == (2, 1024)
    (entry,) = point["contenders"].values()
    assert entry["errors"] == []
    (measured,) = entry["rounds"]
    assert measured["messages"] > 0
    assert measured["server_cpu_stat_seconds"] is not None
    assert entry["cpu_per_message_ratio_to_base"]["median"] == 1.0  # the base is itself


@pytest.mark.timeout(60)
def test_echo_skips_select_past_fd_setsize_with_the_reason(tmp_path: Path) -> None:
    stdout, point = quick_echo(tmp_path, SelectPoller.name, 1100)
    assert "skipped: select watches only fds below FD_SETSIZE" in stdout
    assert point["contenders"] == {}  # no round was driven, so none failed
    assert point["skipped"] == {
        f"pollkit-{SelectPoller.name}": "select watches only fds below FD_SETSIZE (1024)"
    }


@pytest.mark.timeout(60)
def test_without_json_nothing_is_written(tmp_path: Path) -> None:
    result = run_bench(
        *("overhead", "--quick", "--rounds", "1", "--idle", "4", "--backends", DRIVER),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "pollkit/raw" in result.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(60)
def test_a_prefixed_spec_measures_the_wrapped_driver(tmp_path: Path) -> None:
    output = tmp_path / "bench.json"
    result = run_bench(
        *("overhead", "--quick", "--rounds", "1", "--idle", "4"),
        *("--backends", f"Debug:{DRIVER.upper()}", "--json", str(output)),
    )
    assert result.returncode == 0, result.stderr
    cases = load(output)["studies"]["overhead"]["cases"]
    assert {c["driver"] for c in cases} == {f"debug:{DRIVER}"}


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (["nosuchstudy"], "unknown name(s) nosuchstudy"),
        (["--connections", "0"], "--connections"),
        (["--sizes", "big"], "--sizes"),
        (["--backends", "kqueue"], "'kqueue' is not a driver"),
        (["--rounds", "-1"], "--rounds"),
        (["--duration", "0"], "--duration"),
        (["--plot=plots"], "unrecognized arguments: --plot=plots"),  # plots: benchmarks/
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


def test_the_command_line_loads_no_study_until_one_runs() -> None:
    probe = (
        "import sys; from pollkit.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in sys.modules if m.startswith('pollkit.bench')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "['pollkit.bench', 'pollkit.bench.cli']"
