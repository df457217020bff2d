"""The Performance page renders from the committed results, and the results from today's code.

``docs/_ext/pollkit_bench_docs.py`` shows the tables a run stored in its
results JSON.  These tests build a tiny Sphinx project with that extension
(the page's own directives, the committed file, a missing file, a broken
one), and recompute the committed results with ``benchmarks/run_all.py
--retable``, which measures nothing, to prove the stored tables and verdicts
are what the one harness gives today.  No timing is measured.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "_static" / "bench" / "results.json"
PAGE = ROOT / "docs" / "performance.md"
KINDS = re.findall(r"^\.\. pollkit-bench:: (\S+)$", PAGE.read_text(), re.MULTILINE)

needs_sphinx = pytest.mark.skipif(
    importlib.util.find_spec("sphinx") is None,
    reason="Sphinx is not installed (tox -e docs has it)",
)


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(RESULTS.read_text())
    return data


def build(
    tmp_path: Path, kinds: list[str], results: str | None
) -> subprocess.CompletedProcess[str]:
    """Build a one-page project that shows ``kinds`` from ``results`` (a JSON text, or none)."""
    source = tmp_path / "src"
    (source / "_static").mkdir(parents=True)
    (source / "conf.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT / 'docs' / '_ext')!r})\n"
        "extensions = ['pollkit_bench_docs']\npollkit_bench_results = '_static/results.json'\n"
    )
    directives = "".join(f".. pollkit-bench:: {kind}\n\n" for kind in kinds)
    (source / "index.rst").write_text(f"Performance\n===========\n\n{directives}")
    if results is not None:
        (source / "_static" / "results.json").write_text(results)
        if "overhead" in kinds:
            shutil.copy(RESULTS.parent / "overhead.png", source / "_static" / "overhead.png")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "-q",
            "-b",
            "html",
            str(source),
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_page_shows_the_machine_every_study_and_the_targets() -> None:
    assert KINDS[0] == "machine"
    assert set(KINDS) >= {"targets", "overhead", "scaling", "echo", "memory", "workers", "resp"}


@needs_sphinx
@pytest.mark.timeout(120)
def test_every_table_the_page_shows_renders_from_the_committed_results(tmp_path: Path) -> None:
    result = build(tmp_path, KINDS, RESULTS.read_text())
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    document = committed()
    for study in document["studies"].values():
        assert study["table"]["title"].replace("&", "&amp;") in page
    for target in document["targets"]:
        assert target["target"] in page
    assert 'src="_images/overhead.png"' in page
    assert "results.json" in page  # the download link under the machine table
    if "resp" not in document["studies"]:
        assert "python benchmarks/run_all.py resp" in page  # the note saying how to measure it


@needs_sphinx
@pytest.mark.timeout(120)
def test_without_results_every_table_says_how_to_measure_it(tmp_path: Path) -> None:
    result = build(tmp_path, ["machine", "echo"], None)
    assert result.returncode == 0, result.stderr
    page = (tmp_path / "out" / "index.html").read_text()
    assert page.count("python benchmarks/run_all.py") == 2


@needs_sphinx
@pytest.mark.timeout(120)
@pytest.mark.parametrize("results", ["{not json", json.dumps({"studies": {"echo": {}}})])
def test_results_that_are_not_a_run_fail_the_build_naming_the_file(
    tmp_path: Path, results: str
) -> None:
    result = build(tmp_path, ["echo"], results)
    assert result.returncode != 0
    assert "results.json" in result.stderr
    assert "benchmarks/run_all.py" in result.stderr


def test_each_committed_table_is_rectangular_and_each_verdict_follows_its_rule() -> None:
    document = committed()
    tables = [study["table"] for study in document["studies"].values()]
    for table in [*tables, document["targets_table"]]:
        assert all(len(row) == len(table["headers"]) for row in table["rows"]), table["title"]
    for target in document["targets"]:
        measured, limit = target["measured"], target["limit"]
        assert target["met"] == (measured < limit if target["rule"] == "<" else measured <= limit)
        assert target["spread"][0] <= measured <= target["spread"][1]


@pytest.mark.timeout(120)
def test_the_committed_results_are_what_todays_harness_computes(tmp_path: Path) -> None:
    again = tmp_path / "results.json"
    done = subprocess.run(
        [
            *(sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--retable", str(RESULTS)),
            *("--json", str(again), "--plot", str(tmp_path / "plots")),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    recomputed, stored = json.loads(again.read_text()), committed()
    assert recomputed["targets"] == stored["targets"]
    assert recomputed["targets_table"] == stored["targets_table"]
    for name, study in stored["studies"].items():
        assert recomputed["studies"][name]["table"] == study["table"], name
