"""``pollkit-bench``: the Performance page's tables, plots and figures, from the committed run.

``.. pollkit-bench:: KIND`` renders one part of ``docs/performance.md`` from
the JSON document ``pollkit bench --json`` wrote (``KIND`` is ``machine``, a
study, ``targets`` or ``advice``; see ``pollkit_bench_render.py``, which does
the rendering and holds no Sphinx code so that the tests can run it
anywhere).  A study's section ends with the plot ``pollkit bench --plot``
drew for it (``<study>.png`` beside the JSON), when that file exists.

Where the results are is the config value ``pollkit_bench_results``, a path
relative to the docs source directory (default
``_static/bench/results.json``); ``sphinx-build -D
pollkit_bench_results=...`` points a build at another run.  Without the
file every directive renders an admonition saying how to produce it, and
the build passes; a file that is not what ``pollkit bench`` writes fails the
build.  Like ``pollkit_docs``'s directives this one emits reStructuredText,
so in a MyST page it goes inside an ``{eval-rst}`` block.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from docutils import nodes
from docutils.statemachine import StringList
from pollkit_bench_render import KINDS, render
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

from pollkit.bench.cli import STUDIES

#: Parsed documents by (path, modification time): the page reads one file eight times.
_LOADED: dict[tuple[str, int], Any] = {}


class BenchDirective(SphinxDirective):
    """``.. pollkit-bench:: KIND``: one table (and plot), or the advice, from the results."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        kind = self.arguments[0]
        if kind not in KINDS:
            raise self.error(f"unknown pollkit-bench kind {kind!r}; choose from {', '.join(KINDS)}")
        srcdir = Path(self.env.srcdir)
        path = srcdir / self.config.pollkit_bench_results
        self.env.note_dependency(str(path))
        document = self._load(path)
        if document is None:
            # Reread this page on every build until results appear: they may
            # arrive older than the last build (copied, say), which a
            # dependency's modification time would not notice.
            self.env.note_reread()
        measured = document.get("studies", {}) if isinstance(document, dict) else {}
        figures = {}
        for study in STUDIES:
            plot = path.parent / f"{study}.png"
            if study in measured:
                self.env.note_dependency(str(plot))  # a plot drawn later still shows
            if plot.is_file():
                figures[study] = "/" + Path(os.path.relpath(plot, srcdir)).as_posix()
        shown = os.path.relpath(path, srcdir.parent)  # as seen from the repository root
        try:
            lines = render(kind, document, figures=figures, results_path=shown)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise self.error(
                f"{path}: cannot render {kind!r} ({type(exc).__name__}: {exc}); "
                "is this the JSON `pollkit bench --json` writes?"
            ) from exc
        if kind == "machine" and document is not None:
            uri = "/" + Path(os.path.relpath(path, srcdir)).as_posix()
            link = f":download:`{path.name} <{uri}>`"
            lines += [f"Every figure of the run, each round included: {link}.", ""]
        container = nodes.Element()
        source = self.get_source_info()[0] or self.env.docname
        nested_parse_with_titles(self.state, StringList(lines, source), container)
        return list(container.children)

    def _load(self, path: Path) -> Any | None:
        """The parsed results, or ``None`` if there are none; a build error if unreadable."""
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except FileNotFoundError:
            return None
        if key not in _LOADED:
            try:
                _LOADED[key] = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise self.error(f"cannot read benchmark results {path}: {exc}") from exc
        return _LOADED[key]


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("pollkit_bench_results", "_static/bench/results.json", "env", str)
    app.add_directive("pollkit-bench", BenchDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
