"""tests/forkserver.py: a forked command is what a fresh ``python ...`` would be, as the tests see it
(status, output, traceback, argv, path, cwd, environment, pid, signals, terminal, exit handlers)."""
from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys

import pytest

import forkserver
from conftest import train_env

REPORT = """\
import atexit, json, os, sys
atexit.register(lambda: print("atexit ran", flush=True))
print(json.dumps({"argv": sys.argv, "path": sys.path, "cwd": os.getcwd(), "env": os.environ.get("PYTEST_CURRENT_TEST"),
                  "name": __name__, "file": globals().get("__file__"), "pid": os.getpid()}))
print("to stderr", file=sys.stderr)
"""


def both(args: list[str], input: str | None = None, **kwargs):
    """The command forked from the server, and the same command in a fresh interpreter."""
    forked = forkserver.fork(args, stdin=None if input is None else subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **kwargs)
    out, err = forked.communicate(input, timeout=60)
    fresh = subprocess.run(args, input=input, capture_output=True, text=True, timeout=60, **kwargs)
    return subprocess.CompletedProcess(args, forked.returncode, out, err), fresh


def report(result: subprocess.CompletedProcess) -> dict:
    lines = result.stdout.splitlines()
    assert lines[1:] == ["atexit ran"] and result.stderr == "to stderr\n", result
    return json.loads(lines[0])


@pytest.mark.parametrize("code", ["-c", "script", "-m"])
def test_argv_path_cwd_environment_and_main_are_a_fresh_interpreters(code, tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(REPORT)
    command = {"-c": ["-c", REPORT], "script": [str(script)], "-m": ["-m", "probe"]}[code]
    forked, fresh = both([sys.executable, *command, "a", "--b"], cwd=tmp_path, env=train_env())
    assert forked.returncode == fresh.returncode == 0
    ours, theirs = report(forked), report(fresh)
    assert ours.pop("pid") != theirs.pop("pid")
    assert ours == theirs and ours["name"] == "__main__"
    assert "test_argv_path_cwd" in ours["env"], "the command's environment, not the server's (set per test)"


@pytest.mark.parametrize("code", [
    "import sys; print('out'); sys.exit(3)",
    "def f():\n    raise ValueError('boom')\nf()",
    "import sys; print('bye', file=sys.stderr); raise SystemExit('message')",
    "raise KeyboardInterrupt",
    "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
    "import os, sys; print(sys.stdin.read().upper(), os.getsid(0) == os.getpid())",
    "import engine.config",  # preloaded by the server, but not on this command's sys.path
])
@pytest.mark.parametrize("new_session", [False, True])
def test_status_output_and_traceback_are_a_fresh_interpreters(code, new_session, tmp_path):
    forked, fresh = both([sys.executable, "-c", code], input="standard input", cwd=tmp_path, env=train_env(),
                         start_new_session=new_session)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)


def test_the_pid_takes_signals_and_stays_reserved_until_the_status_is_read():
    process = forkserver.fork([sys.executable, "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(60)"],
                              env=train_env(), stdout=subprocess.PIPE, text=True)
    assert int(process.stdout.readline()) == process.pid and process.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        process.wait(timeout=0.1)
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGCONT)
    process.kill()
    assert process.wait(timeout=30) == -signal.SIGKILL
    process.kill()  # after the status: nothing is signalled
    process.stdout.close()


def test_stderr_on_a_terminal_is_a_terminal():
    master, slave = pty.openpty()
    process = forkserver.fork([sys.executable, "-c", "import sys; print(sys.stderr.isatty(), sys.stdout.isatty())"],
                              env=train_env(), stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    out, err = process.communicate(timeout=60)
    os.close(master)
    assert (out, err, process.returncode) == ("True False\n", None, 0)


def test_other_environments_and_interpreter_options_get_a_fresh_interpreter():
    forkserver.fork([sys.executable, "-c", "pass"], env=train_env()).wait(60)  # the server runs, with train_env()
    env = dict(train_env(), OMP_NUM_THREADS="2")  # read when torch is imported: the server's is 1
    for args, environment in ([sys.executable, "-c", "pass"], env), ([sys.executable, "-I", "-c", "pass"], train_env()):
        process = forkserver.popen(args, env=environment, stdout=subprocess.DEVNULL)
        assert isinstance(process, subprocess.Popen) and process.wait(timeout=60) == 0
        with pytest.raises(ValueError, match="cannot run"):
            forkserver.fork(args, env=environment)
