"""Sphinx configuration for pollkit's documentation.

Build: ``tox -e docs``, i.e. ``sphinx-build -W --keep-going -n -b html docs
docs/_build/html``: warnings are errors and every cross-reference must
resolve.  Reference pages are generated from the code by ``_ext/pollkit_docs.py``,
the Performance page's tables from the committed benchmark results by
``_ext/pollkit_bench_docs.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

import pollkit  # after the path set-up above, like every Sphinx conf.py

project = "pollkit"
author = "pollkit developers"
copyright = "pollkit developers"  # the name Sphinx reads
version = release = pollkit.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "pollkit_docs",
    "pollkit_bench_docs",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]

# Every reference must resolve (-n); pollkit_docs maps private module paths
# to the public names and leaves stdlib names as text (no intersphinx: the
# build must work offline).
nitpicky = True

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
# Keep the alias's name in signatures instead of expanding it to a Union
# with a private Protocol in it.
autodoc_type_aliases = {"FileDescriptorLike": "pollkit.FileDescriptorLike"}

myst_heading_anchors = 3

html_theme = "furo"
html_title = f"pollkit {release}"
