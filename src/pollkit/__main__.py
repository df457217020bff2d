"""``python -m pollkit``: the same as the ``pollkit`` command."""

import sys

from .cli import main

sys.exit(main())
