"""Print which tests skipped and why, and fail when one skipped that tests/expected_skips.txt does not allow.

A fresh machine runs everything but what needs a GPU, ultralytics or TensorRT's headers. A missing install step
(a header package, a compiler, a Python extra) would otherwise turn tests into quiet skips and CI stays green.

    python .ci/check_skips.py JUNIT_XML [EXPECTED]      (EXPECTED defaults to tests/expected_skips.txt)

EXPECTED holds one rule a line, `<test id glob> | <reason regex>` ('#' starts a comment). A skip is allowed when
some rule's glob matches its test id (`tests/file.py::name[params]`) and its regex is found in its reason.
Exit 0: every skip allowed. Exit 1: some skip is not, or a rule matched no skip and no test ran under it.
"""

from __future__ import annotations

import fnmatch
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Rule:
    pattern: str
    reason: re.Pattern[str]
    line: int


def read_rules(path: Path) -> list[Rule]:
    rules = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        text = raw.split("#", 1)[0].strip()
        if not text:
            continue
        if "|" not in text:
            sys.exit(f"{path}:{number}: expected '<test id glob> | <reason regex>', got {raw!r}")
        pattern, reason = (part.strip() for part in text.split("|", 1))
        rules.append(Rule(pattern, re.compile(reason), number))
    return rules


def read_cases(path: Path) -> tuple[list[str], dict[str, str]]:
    """(every test id, {skipped test id: reason}) of a pytest JUnit XML report."""
    ran, skipped = [], {}
    for case in ET.parse(path).getroot().iter("testcase"):
        # classname is "tests.test_file", or "tests.test_file.TestClass" for a method of a test class
        parts = case.get("classname", "").split(".")
        owner = [parts.pop()] if parts and parts[-1].startswith("Test") else []
        test_id = "::".join(["/".join(parts) + ".py", *owner, case.get("name", "")])
        ran.append(test_id)
        skip = case.find("skipped")
        if skip is not None:
            skipped[test_id] = (skip.get("message") or "").strip()
    return ran, skipped


def main() -> int:
    report = Path(sys.argv[1])
    expected = Path(sys.argv[2] if len(sys.argv) > 2 else "tests/expected_skips.txt")
    rules = read_rules(expected)
    ran, skipped = read_cases(report)
    used: set[int] = set()
    unexpected = []
    print(f"== skipped tests: {len(skipped)} of {len(ran)}")
    for test_id, reason in sorted(skipped.items()):
        rule = next(
            (r for r in rules if fnmatch.fnmatchcase(test_id, r.pattern) and r.reason.search(reason)), None
        )
        if rule is None:
            unexpected.append((test_id, reason))
            print(f"  UNEXPECTED {test_id}: {reason}")
        else:
            used.add(rule.line)
            print(f"  ok ({expected.name}:{rule.line}) {test_id}: {reason}")
    stale = [
        r for r in rules if r.line not in used and not any(fnmatch.fnmatchcase(t, r.pattern) for t in ran)
    ]
    for rule in stale:
        print(f"  STALE {expected}:{rule.line}: no test matches {rule.pattern!r}")
    if unexpected:
        print(
            f"check_skips: {len(unexpected)} test(s) skipped that run on a fresh machine: an install step is "
            f"missing or a test broke; fix that, or allow the skip in {expected} with its reason"
        )
    return 1 if unexpected or stale else 0


if __name__ == "__main__":
    sys.exit(main())
