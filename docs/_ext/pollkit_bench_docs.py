"""``.. pollkit-bench:: KIND``: one table of the Performance page, and its plot, from the results.

``KIND`` is ``machine``, ``targets`` or a study of ``benchmarks/run_all.py``.
The tables are the ones the run printed, kept in its results JSON (config
value ``pollkit_bench_results``, relative to the docs source, default
``_static/bench/results.json``); a study's plot is ``<study>.png`` beside it.
Every word around them is written on the page by hand.  A missing file or
study renders a note saying how to measure it; a malformed file fails the
build.  In a MyST page the directive goes inside an ``{eval-rst}`` block.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

_HOW = "python benchmarks/run_all.py"


def _table(data: dict[str, Any]) -> nodes.table:
    """A docutils table of a run's table: ``title``, ``headers``, ``rows`` of strings."""

    def row(cells: list[str]) -> nodes.row:
        return nodes.row("", *(nodes.entry("", nodes.paragraph(text=cell)) for cell in cells))

    group = nodes.tgroup("", *(nodes.colspec(colwidth=1) for _ in data["headers"]))
    group["cols"] = len(data["headers"])
    group += nodes.thead("", row(data["headers"]))
    group += nodes.tbody("", *map(row, data["rows"]))
    return nodes.table("", nodes.title(text=data["title"]), group)


def _note(text: str) -> list[nodes.Node]:
    return [nodes.note("", nodes.paragraph(text=text))]


class BenchDirective(SphinxDirective):
    """``.. pollkit-bench:: KIND``: the table of ``KIND`` (and its plot) from the results."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        kind, srcdir = self.arguments[0], Path(self.env.srcdir)
        path = srcdir / self.config.pollkit_bench_results
        self.env.note_dependency(str(path))
        if not path.is_file():
            return _note(f"No benchmark results at {path.name} yet: `{_HOW}` measures them.")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            if kind == "machine":
                facts = [[key, str(value)] for key, value in document["machine"].items()]
                facts.append(["seconds the run took", f"{document['seconds']:.0f}"])
                data = {"title": "the machine and the run", "headers": ["", ""], "rows": facts}
            elif kind == "targets":
                data = document["targets_table"]
            elif kind not in document["studies"]:
                return _note(f"The committed run did not measure {kind}: `{_HOW} {kind}` does.")
            else:
                data = document["studies"][kind]["table"]
            found: list[nodes.Node] = [_table(data)]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise self.error(f"{path}: no {kind!r} table ({exc!r}); rerun `{_HOW}`") from exc
        uri = "/" + path.relative_to(srcdir).as_posix()
        if kind == "machine":
            link = addnodes.download_reference("", "", nodes.literal("", path.name), reftarget=uri)
            found.append(nodes.paragraph("", "Every figure, each round included: ", link))
        plot = path.parent / f"{kind}.png"
        if plot.is_file():
            self.env.note_dependency(str(plot))
            found.append(nodes.image(uri=uri.rsplit("/", 1)[0] + f"/{plot.name}", alt=kind))
        return found


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_config_value("pollkit_bench_results", "_static/bench/results.json", "env", str)
    app.add_directive("pollkit-bench", BenchDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
