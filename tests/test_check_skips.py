"""CI's skip-list check (.ci/check_skips.py) on a hand-written JUnit report: an allowed skip passes, a skip with
another reason or of another test fails CI, and so does a rule whose tests are gone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "check_skips.py"

REPORT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.test_gpu" name="test_scan[16-dtype0]"><skipped message="needs a CUDA GPU" /></testcase>
<testcase classname="tests.test_gpu" name="test_ran" />
<testcase classname="tests.test_ort.TestOp" name="test_node"><skipped message="{reason}" /></testcase>
<testcase classname="tests.test_video" name="test_yolo" />
</testsuite></testsuites>"""


def _check(tmp_path: Path, reason: str, rules: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "report.xml").write_text(REPORT.format(reason=reason))
    (tmp_path / "expected.txt").write_text(rules)
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "report.xml"), str(tmp_path / "expected.txt")],
        capture_output=True, text=True,
    )  # fmt: skip


RULES = """# comment
tests/test_gpu.py::* | ^needs a CUDA GPU$
tests/test_ort.py::TestOp::* | no TensorRT headers   # a reason of its own
tests/test_video.py::* | ultralytics
"""


def test_allowed_skips_pass(tmp_path):
    done = _check(tmp_path, "no TensorRT headers: set TENSORRT_INCLUDE_DIR", RULES)
    assert done.returncode == 0, done.stdout
    assert "== skipped tests: 2 of 4" in done.stdout
    assert "ok (expected.txt:2) tests/test_gpu.py::test_scan[16-dtype0]: needs a CUDA GPU" in done.stdout


def test_a_skip_with_another_reason_fails(tmp_path):
    done = _check(tmp_path, "onnxruntime_c_api.h not found", RULES)
    assert done.returncode == 1
    assert "UNEXPECTED tests/test_ort.py::TestOp::test_node: onnxruntime_c_api.h not found" in done.stdout


def test_a_rule_for_tests_that_are_gone_fails(tmp_path):
    done = _check(tmp_path, "no TensorRT headers", RULES + "tests/test_removed.py::* | anything\n")
    assert done.returncode == 1 and "STALE" in done.stdout and "test_removed.py" in done.stdout
