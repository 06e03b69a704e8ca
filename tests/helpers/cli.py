"""The CLI as the tests drive it: in this process with click's runner (`run`, the default: fast, and patches
reach it), or as a separate process where a test needs one (`cli` to completion, `start` in the background):
for SIGKILL, a closed pipe, a process of its own. `python` runs code in a fresh interpreter, for what must
start from clean `sys.modules` (what a cold start imports) or may die by a signal."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

_SCRIPT = Path(sys.executable).with_name("searchengine")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "searchengine"]


def _arg(value: object) -> str:
    """A command-line argument: a path, a number, or the bytes of a file name that is not UTF-8."""
    return os.fsdecode(value) if isinstance(value, bytes) else str(value)


def run(*args: object, ok: bool = True):
    """The CLI in this process (click's runner): never a traceback; exit 0 unless `ok` is False."""
    from click.testing import CliRunner

    from searchengine.cli.main import main

    result = CliRunner().invoke(main, [_arg(a) for a in args], catch_exceptions=False)
    assert "Traceback" not in result.stderr
    if ok:
        assert result.exit_code == 0, (result.output, result.stderr)
    return result


def index_json(*args: object, ok: bool = True) -> dict:
    """`index ARGS --json` in this process: its summary."""
    return json.loads(run("index", *args, "--json", ok=ok).stdout)


def command(*args: object) -> list[str]:
    """The real CLI's command line, for a separate process."""
    return [*CLI, *map(_arg, args)]


def cli(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run the real CLI in its own process, to completion."""
    return subprocess.run(command(*args), capture_output=True, text=True, timeout=timeout)


def start(*args: object, log: Path | None = None) -> subprocess.Popen:
    """Start the real CLI in a new session (its own process group, decode workers included); output to
    `log`.out and `log`.err, or to pipes without a log."""
    if log is None:
        return subprocess.Popen(command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    out, err = open(log.with_suffix(".out"), "wb"), open(log.with_suffix(".err"), "wb")
    try:
        return subprocess.Popen(command(*args), stdout=out, stderr=err, start_new_session=True)
    finally:
        out.close()
        err.close()


def python(code: str, **kwargs) -> subprocess.CompletedProcess:
    """`python -c code` in a fresh interpreter, with the repository importable; `kwargs` as subprocess.run's."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    kwargs["env"] = {**kwargs.get("env", os.environ), "PYTHONPATH": path}
    return subprocess.run([sys.executable, "-c", code], **kwargs)


def summary_of(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return json.loads(result.stdout)
