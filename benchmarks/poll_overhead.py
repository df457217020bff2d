"""What one ``poll(0)`` costs: pollkit beside the raw call and stdlib ``selectors``.

1,000 idle fds (500 on select, whose fds must stay below 1024) plus 1 and then
64 ready fds; per driver, the raw ``select`` call, pollkit, ``selectors`` and a
bare method wrapper take turns in alternating rounds.  Prints a table and
writes ``benchmarks/results/poll_overhead.json``.

    python3 benchmarks/poll_overhead.py            # about 20 s
    python3 benchmarks/poll_overhead.py --rounds 500 --backends epoll

Targets (issue 2): pollkit/raw <= 1.15 with 1 ready fd, <= 1.05 with 64.
The machinery is ``pollkit.bench`` (also ``pollkit bench overhead``);
``poll_overhead_breakdown.py`` says where a miss comes from.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pollkit.bench.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    sys.exit(main(["overhead", "--json", str(RESULTS / "poll_overhead.json"), *sys.argv[1:]]))
