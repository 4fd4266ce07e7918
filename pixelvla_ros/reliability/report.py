"""One row of the reliability table, and the table itself."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class DrillRow:
    """What one kind of bad input or fault did to the stack. `survived`: the stack was alive and usable
    afterwards; `unexpected_motions`: motion it must not make (for the fuzz: outputs outside the limits)."""

    suite: str  # "malformed", "drill" or "fuzz"
    kind: str
    tried: int  # messages, drills or inputs of this kind
    crashes: int
    unexpected_motions: int
    survived: bool
    note: str = ""

    @property
    def ok(self) -> bool:
        return self.crashes == 0 and self.unexpected_motions == 0 and self.survived


def format_table(rows: Iterable[DrillRow]) -> str:
    """A plain-text table with a total line."""
    rows = list(rows)
    header = ("suite", "kind", "tried", "crashes", "unexpected motion", "survived", "note")
    lines = [
        (
            r.suite,
            r.kind,
            str(r.tried),
            str(r.crashes),
            str(r.unexpected_motions),
            "yes" if r.survived else "NO",
            r.note,
        )
        for r in rows
    ]
    widths = [
        max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines]
    out.append(
        f"{len(rows)} kinds, {sum(r.tried for r in rows)} tried: {sum(r.crashes for r in rows)} crashes, "
        f"{sum(r.unexpected_motions for r in rows)} unexpected motions, "
        f"{sum(r.survived for r in rows)}/{len(rows)} survived"
    )
    return "\n".join(out)
