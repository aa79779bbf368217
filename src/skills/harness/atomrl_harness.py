"""Grading harness, loaded inside the sandbox.

As a pytest plugin (`-p atomrl_harness`) it records the outcome of every test, and optionally the
package functions each test calls, and writes one JSON object to $ATOMRL_REPORT at the end of the
session, stamped with the nonce it took from $ATOMRL_NONCE (and removed from the environment)
before any tested code was imported.

As a runner (`python -m atomrl_harness run SCRIPT`) it runs a standalone script and tells the
script's own mistakes apart from what the script detects: exit 201 for a syntax error in the
script, 202 for an ImportError escaping it; otherwise the script's own exit status.
"""

import json
import os
import sys

_NONCE = os.environ.pop("ATOMRL_NONCE", "")
_REPORT = os.environ.pop("ATOMRL_REPORT", "")
_TRACE_ROOT = os.environ.pop("ATOMRL_TRACE_ROOT", "")

_outcomes = {}
_messages = {}
_calls = {}
_collect_errors = []


def _set_outcome(nodeid, outcome):
    # The worst phase wins: error/failed over skipped over passed.
    rank = {"passed": 0, "xfailed": 0, "skipped": 1, "xpassed": 2, "failed": 3, "error": 3}
    old = _outcomes.get(nodeid)
    if old is None or rank[outcome] >= rank[old]:
        _outcomes[nodeid] = outcome


def _message(report):
    crash = getattr(getattr(report, "longrepr", None), "reprcrash", None)
    text = getattr(crash, "message", None) or str(getattr(report, "longrepr", "") or "")
    return text[:600]


def pytest_runtest_logreport(report):
    nodeid = report.nodeid
    wasxfail = hasattr(report, "wasxfail")
    if report.when == "call":
        if report.passed:
            _set_outcome(nodeid, "xpassed" if wasxfail else "passed")
        elif report.skipped:
            _set_outcome(nodeid, "xfailed" if wasxfail else "skipped")
        else:
            _set_outcome(nodeid, "failed")
            _messages[nodeid] = _message(report)
    elif report.failed:
        _set_outcome(nodeid, "error")
        _messages.setdefault(nodeid, _message(report))
    elif report.skipped:
        _set_outcome(nodeid, "skipped")


def pytest_runtest_setup(item):
    # Tests that draw random numbers (random replacement caches, samplers) give the same
    # outcome on every run, as pytest-randomly does with a fixed seed.
    import random

    random.seed(0)


def pytest_collectreport(report):
    if report.failed:
        _collect_errors.append({"nodeid": report.nodeid, "message": _message(report)})


if _TRACE_ROOT:
    import pytest

    _rel = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        seen = set()
        root = _TRACE_ROOT
        cwd = os.getcwd()

        def prof(frame, event, arg):
            if event == "call":
                code = frame.f_code
                rel = _rel.get(code.co_filename)
                if rel is None:
                    f = code.co_filename
                    rel = os.path.relpath(f, cwd) if f.startswith(root) else ""
                    _rel[f] = rel
                if rel:
                    seen.add((rel, code.co_firstlineno))

        sys.setprofile(prof)
        try:
            yield
        finally:
            sys.setprofile(None)
            _calls[item.nodeid] = sorted(seen)


def pytest_sessionfinish(session, exitstatus):
    if not _REPORT:
        return
    data = {
        "nonce": _NONCE,
        "exitstatus": int(exitstatus),
        "tests": _outcomes,
        "messages": _messages,
        "collect_errors": _collect_errors,
    }
    if _TRACE_ROOT:
        data["calls"] = {k: [f"{f}:{n}" for f, n in v] for k, v in _calls.items()}
    with open(_REPORT, "a") as f:
        f.write(json.dumps(data) + "\n")


def _run_script(path):
    import runpy
    import traceback

    try:
        with open(path, "rb") as f:
            compile(f.read(), path, "exec")
    except (SyntaxError, ValueError) as e:
        print(f"atomrl: the script does not compile: {e}", file=sys.stderr)
        sys.exit(201)
    sys.argv = [path]
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit:
        raise
    except ImportError:
        traceback.print_exc()
        sys.exit(202)
    except BaseException:
        traceback.print_exc()
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "run":
        _run_script(sys.argv[2])
    else:
        print("usage: python -m atomrl_harness run SCRIPT", file=sys.stderr)
        sys.exit(2)
