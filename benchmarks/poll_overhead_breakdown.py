"""Where pollkit's ``poll(0)`` overhead goes, step by step (see ``pollkit.bench.breakdown``).

For the three tightest cases of ``poll_overhead.py`` (epoll with 1 ready fd,
poll and select with 64), times the raw call, wrappers that add one piece of
the driver's hot path at a time, and the real driver, in alternating rounds.
Prints a table and writes ``benchmarks/results/poll_overhead_breakdown.json``.

    python3 benchmarks/poll_overhead_breakdown.py            # about 20 s
    python3 benchmarks/poll_overhead_breakdown.py --rounds 1000
"""

from __future__ import annotations

import sys
from pathlib import Path

from pollkit.bench.breakdown import breakdown_table, run_breakdown
from pollkit.bench.report import Progress, machine_info, write_json
from pollkit.cli import ArgumentParser

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = ArgumentParser(
        prog="poll_overhead_breakdown.py",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--rounds", type=int, default=300, help="alternating rounds (default: 300)")
    parser.add_argument("--json", default=str(RESULTS / "poll_overhead_breakdown.json"))
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be positive, not {args.rounds}")
    results = run_breakdown(rounds=args.rounds, progress=Progress())
    print(breakdown_table(results))
    write_json(
        args.json,
        {"machine": machine_info(), "cases": [result.as_dict() for result in results]},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
