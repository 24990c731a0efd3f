"""What the Python end-to-end tests share: named checks that are all run
and counted (not stopped at the first failure), and (from
tools/bench/server_process.py) Python gRPC stubs generated from our proto
at run time."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tools", "bench"))
from server_process import generate_stubs  # noqa: E402,F401

PASSED, FAILED = [], []


def check(name, condition, detail=""):
    (PASSED if condition else FAILED).append(name)
    print(("ok   " if condition else "FAIL ") + name +
          ("" if condition else f": {detail}"), flush=True)
