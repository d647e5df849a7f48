"""One closing line for `./lt test`'s two pytest phases (two xdist workers, then the solo tests
alone): their JUnit reports summed, as pytest's own "N passed, N failed, N skipped", so a reader
of the log (or CI) sees the whole suite's count in one place."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path


def totals(reports: list[Path]) -> tuple[int, int, int]:
    """(passed, failed, skipped) over every report's test suites; an error counts as failed."""
    tests = failed = skipped = 0
    for report in reports:
        for suite in ElementTree.parse(report).getroot().iter("testsuite"):
            tests += int(suite.get("tests", 0))
            failed += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
            skipped += int(suite.get("skipped", 0))
    return tests - failed - skipped, failed, skipped


def main(arguments: list[str]) -> int:
    present = [Path(a) for a in arguments if Path(a).is_file()]
    passed, failed, skipped = totals(present)
    print(f"suite: {passed} passed, {failed} failed, {skipped} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
