#!/usr/bin/env python3
"""Compares ctest's recorded test times with each test's TIMEOUT and lists the tests whose
timeout is within FACTOR (default 3) times their time (issue 19: a busy machine must not time
out a test). Times come from Testing/Temporary/LastTest.log (the last run of each test) and,
for tests not in it, CTestCostData.txt (ctest's running average).

usage: scripts/test-time-margins.py [BUILD_DIR] [--factor 3]
Exit 1 when any test is too close, 0 otherwise."""
import argparse
import json
import pathlib
import re
import subprocess
import sys


def recorded_times(build: pathlib.Path) -> dict:
    times = {}
    cost = build / "Testing" / "Temporary" / "CTestCostData.txt"
    if cost.exists():
        for line in cost.read_text().splitlines():
            if line.startswith("---"):
                break  # the failed-tests section follows
            parts = line.split()
            if len(parts) == 3:
                times[parts[0]] = float(parts[2])
    log = build / "Testing" / "Temporary" / "LastTest.log"
    if log.exists():
        name = None
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"\d+/\d+ Test: (.+)$", line)
            if m:
                name = m.group(1).strip()
            m = re.match(r"Test time =\s*([\d.]+) sec", line)
            if m and name:
                times[name] = float(m.group(1))
                name = None
    return times


def timeouts(build: pathlib.Path) -> dict:
    out = subprocess.run(["ctest", "--show-only=json-v1"], cwd=build, capture_output=True, text=True, check=True)
    result = {}
    for test in json.loads(out.stdout)["tests"]:
        for prop in test.get("properties", []):
            if prop["name"] == "TIMEOUT":
                result[test["name"]] = float(prop["value"])
        result.setdefault(test["name"], 1500.0)  # ctest's default
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("build", nargs="?", default="build")
    ap.add_argument("--factor", type=float, default=3.0)
    args = ap.parse_args()
    build = pathlib.Path(args.build)
    times, limits = recorded_times(build), timeouts(build)
    close, unmeasured = [], []
    for name, limit in sorted(limits.items()):
        if name not in times:
            unmeasured.append(name)
        elif limit < args.factor * times[name]:
            close.append((limit / times[name], name, times[name], limit))
    total = sum(times.get(n, 0) for n in limits)
    print(f"{len(limits)} tests, {len(limits) - len(unmeasured)} with a recorded time, {total:.0f} s in all")
    for ratio, name, t, limit in sorted(close):
        print(f"  TOO CLOSE {name}: {t:.1f} s of a {limit:.0f} s timeout ({ratio:.1f}x)")
    if unmeasured:
        print(f"  {len(unmeasured)} without a recorded time (not run yet), e.g. {unmeasured[0]}")
    slowest = sorted(((times[n], n, limits[n]) for n in limits if n in times), reverse=True)[:5]
    for t, name, limit in slowest:
        print(f"  slowest: {name} {t:.1f} s (timeout {limit:.0f} s, {limit / t:.1f}x)")
    return 1 if close else 0


if __name__ == "__main__":
    sys.exit(main())
