"""Run the reliability suite and print its table; exit status 1 if any kind crashed a node, moved the arm
unexpectedly or was not survived.

    python -m pixelvla_ros.reliability [--parts fuzz malformed drills] [--fuzz-inputs N]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

from pixelvla_ros.reliability.report import DrillRow, format_table

print = functools.partial(print, flush=True)  # noqa: A001 - progress lines of a long run

PARTS = ("fuzz", "malformed", "drills")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--fuzz-inputs", type=int, default=1_000_000, help="safety-filter inputs in all")
    args = parser.parse_args(argv)
    rows: list[DrillRow] = []
    start = time.monotonic()
    if "fuzz" in args.parts:
        from pixelvla_ros.reliability import filter_fuzz

        print(f"safety-filter fuzz: {args.fuzz_inputs} inputs")
        rows += filter_fuzz.run(inputs=args.fuzz_inputs)
    if "malformed" in args.parts:
        from pixelvla_ros.reliability import malformed

        print("malformed messages over DDS against the simulated stack")
        rows += malformed.run(log=print)
    if "drills" in args.parts:
        from pixelvla_ros.reliability import drills

        print("fault drills: the ur_driver node and the real ur_rtde client against the UR emulator")
        rows += drills.run(log=print)
    print(format_table(rows))
    print(f"{time.monotonic() - start:.0f} s")
    return 0 if all(row.ok for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
