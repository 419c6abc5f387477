"""Real ``python train.py ...`` processes for the tests, without importing torch in each of them.

Importing train.py (torch, torchvision, TensorBoard) takes seconds, longer than most of the tests'
runs themselves. A fork server imports it once, then forks a child per command: each child is a real
process of its own (its pid, its exit status, its signals, its stdin/stdout/stderr and a fresh copy of
the interpreter's state), that then runs the script as ``python SCRIPT ARGS...`` would: as
``__main__``, with ``sys.argv``, ``sys.path[0]``, the working directory and the environment set as
the command gives them, and a normal interpreter exit (atexit handlers, flushed streams, a traceback
and status 1 for an uncaught exception, death by SIGINT for an uncaught KeyboardInterrupt).

The modules of this repository that the command's ``sys.path`` would not find are dropped again,
so a script that cannot import them fails as it would in a fresh interpreter.

What differs from a fresh interpreter: the modules in ``PRELOAD`` were imported before the
environment was set, so environment variables read at import time (``OMP_NUM_THREADS``,
``PYTHONUNBUFFERED``, ...) are those the server started with. Commands are therefore forked only when
their environment is the server's (``PYTEST_CURRENT_TEST`` aside); any other command, one that is not
``python SCRIPT|-c CODE|-m MODULE ...``, and every command when ``TESTS_FORKSERVER=0``, runs as a
plain ``subprocess.Popen`` (tests/test_forkserver.py checks that the two agree).

    popen(args, cwd=..., env=..., stdout=PIPE, start_new_session=..., ...)  ->  a Popen-like object
    run(args, cwd=..., env=..., input=..., capture_output=True, text=True, timeout=...)  ->  CompletedProcess
    fork(args, ...): as popen, but always forked (or ValueError)

The server runs as ``python tests/forkserver.py ADDRESS`` and lives as long as the test session.
"""
from __future__ import annotations

import atexit
import gc
import io
import json
import locale
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from subprocess import DEVNULL, PIPE, STDOUT, CompletedProcess, TimeoutExpired

REPO = Path(__file__).resolve().parents[1]
PRELOAD = ("train", "torch.utils.tensorboard", "torch.utils.tensorboard.summary")
VOLATILE = {"PYTEST_CURRENT_TEST"}  # set by pytest per test; read by nothing at import time
MAX_MESSAGE = 1 << 20


# ============================================================================ the server
def serve(address: str) -> None:
    server_pid, parent_pid = os.getpid(), os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the finally below kills the children
    sys.path.insert(0, str(REPO))
    for name in PRELOAD:
        __import__(name)
    sys.path.remove(str(REPO))
    # What the children inherit is never collected: without this, each one's garbage collections and exit
    # walk (and so copy, page by page) the whole of torch's objects: 1.5 s more per command.
    gc.collect()
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(address)
    listener.listen(64)
    children: dict[int, dict] = {}  # pidfd -> {"pid", "conn", "exited"}
    print("ready", flush=True)
    try:
        while os.getppid() == parent_pid:  # the test session ended without closing the server
            watched = [listener, *(c["conn"] for c in children.values() if c["conn"] is not None),
                       *(fd for fd, c in children.items() if not c["exited"])]
            for ready in select.select(watched, [], [], 1.0)[0]:
                if ready is listener:
                    conn, _ = listener.accept()
                    message, fds, _, _ = socket.recv_fds(conn, MAX_MESSAGE, 3)
                    pid = os.fork()
                    if pid == 0:  # the child: never returns into this loop
                        listener.close()
                        for fd, child in children.items():
                            os.close(fd)
                            if child["conn"] is not None:
                                child["conn"].close()
                        conn.close()
                        run_child(json.loads(message), fds)
                    for fd in fds:
                        os.close(fd)
                    children[os.pidfd_open(pid)] = {"pid": pid, "conn": conn, "exited": False}
                    conn.send(json.dumps({"pid": pid}).encode())
                elif isinstance(ready, int):  # a pidfd: the child exited; it stays a zombie (its pid
                    child = children[ready]  # reserved for the client's signals) until released
                    child["exited"] = True
                    if child["conn"] is None:
                        reap(children, ready)
                        continue
                    info = os.waitid(os.P_PID, child["pid"], os.WEXITED | os.WNOWAIT)
                    code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
                    try:
                        child["conn"].send(json.dumps({"returncode": code}).encode())
                    except OSError:
                        pass  # the client is gone: its EOF comes next
                else:  # a client's connection: it read the status, or it went away
                    fd = next(fd for fd, c in children.items() if c["conn"] is ready)
                    ready.close()
                    children[fd]["conn"] = None
                    if children[fd]["exited"]:
                        reap(children, fd)
    finally:
        if os.getpid() == server_pid:
            for fd in list(children):
                try:
                    os.kill(children[fd]["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
                reap(children, fd)
            listener.close()


def reap(children: dict, pidfd: int) -> None:
    child = children.pop(pidfd)
    os.waitpid(child["pid"], 0)
    os.close(pidfd)
    if child["conn"] is not None:
        child["conn"].close()


def run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become ``python ARGS...`` and exit as it would."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in set(fds) - {0, 1, 2}:
        os.close(fd)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    args = request["args"]
    import runpy
    import types

    try:
        if args[0] == "-c":
            sys.argv, sys.path[0] = ["-c", *args[2:]], ""
            forget_unreachable_project_modules()
            main = types.ModuleType("__main__")
            main.__builtins__ = __builtins__
            sys.modules["__main__"] = main
            exec(compile(args[1], "<string>", "exec"), main.__dict__)
        elif args[0] == "-m":
            sys.argv, sys.path[0] = ["-m", *args[2:]], os.getcwd()
            forget_unreachable_project_modules()
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv, sys.path[0] = list(args), os.path.dirname(os.path.abspath(args[0]))
            forget_unreachable_project_modules()
            runpy.run_path(args[0], run_name="__main__")
    except SystemExit:
        raise
    except BaseException as error:  # the traceback a fresh interpreter prints: without this file's frames
        traceback = error.__traceback__
        while traceback is not None and traceback.tb_frame.f_code.co_filename in (__file__, runpy.__file__):
            traceback = traceback.tb_next
        sys.excepthook(type(error), error.with_traceback(traceback), traceback)
        if isinstance(error, KeyboardInterrupt):  # the interpreter's exit handlers, then death by SIGINT
            atexit._run_exitfuncs()
            sys.stdout.flush(), sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        raise SystemExit(1) from None
    raise SystemExit(0)


def forget_unreachable_project_modules() -> None:
    """Drop the preloaded modules of this repository (train, engine, data, ...) that the child's
    sys.path would not find, so that importing them fails as in a fresh interpreter."""
    from importlib.machinery import PathFinder

    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if "." in name or not origin.startswith(str(REPO) + os.sep):
            continue
        spec = PathFinder.find_spec(name, sys.path)
        if spec is None or os.path.realpath(spec.origin or "") != os.path.realpath(origin):
            for loaded in [loaded for loaded in sys.modules if loaded == name or loaded.startswith(name + ".")]:
                del sys.modules[loaded]


# ============================================================================ the client
class ForkServer:
    def __init__(self, env: dict):
        self.env = _stable(env)
        self.directory = tempfile.mkdtemp(prefix="forkserver-")
        self.address = os.path.join(self.directory, "socket")
        self.process = subprocess.Popen([sys.executable, __file__, self.address], cwd=REPO, env=env,
                                        stdin=DEVNULL, stdout=PIPE, text=True)
        line = self.process.stdout.readline()
        self.process.stdout.close()
        if line != "ready\n":
            raise RuntimeError(f"the fork server did not start (exit status {self.process.wait()})")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()
        for name in os.listdir(self.directory):
            os.unlink(os.path.join(self.directory, name))
        os.rmdir(self.directory)


class ForkedProcess:
    """The part of subprocess.Popen the tests use, for a child of the fork server."""

    def __init__(self, server: ForkServer, args: list[str], cwd, env: dict, stdin, stdout, stderr, text: bool,
                 start_new_session: bool = False):
        self.args, self.returncode = args, None
        self.stdin = self.stdout = self.stderr = None
        opened: list[int] = []  # this process's copies of the child's ends, closed once it has them

        def child_end(spec, inherited: int, name: str) -> int:
            if spec is None:
                return inherited
            if spec == PIPE:
                ours, theirs = os.pipe()[::-1] if name == "stdin" else os.pipe()
                opened.append(theirs)
                mode = ("w" if name == "stdin" else "r") + ("" if text else "b")
                encoding = _text_encoding() if text else None
                setattr(self, name, io.open(ours, mode, encoding=encoding))
                return theirs
            if spec == DEVNULL:
                opened.append(os.open(os.devnull, os.O_RDWR))
                return opened[-1]
            return spec if isinstance(spec, int) else spec.fileno()

        fds = [child_end(stdin, 0, "stdin"), child_end(stdout, 1, "stdout")]
        fds.append(fds[1] if stderr == STDOUT else child_end(stderr, 2, "stderr"))
        request = {"args": list(args[1:]), "cwd": os.fspath(cwd or os.getcwd()), "env": dict(env),
                   "new_session": start_new_session}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._conn.connect(server.address)
            socket.send_fds(self._conn, [json.dumps(request).encode()], fds)
            self.pid = json.loads(self._conn.recv(MAX_MESSAGE))["pid"]
        finally:
            for fd in opened:
                os.close(fd)
        self._readers: list[threading.Thread] | None = None
        self._output: dict[str, str | bytes] = {}

    def _collect(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                message = self._conn.recv(MAX_MESSAGE)
            except (BlockingIOError, socket.timeout):
                return None
            if not message:
                raise RuntimeError(f"the fork server went away before pid {self.pid} ended")
            self.returncode = json.loads(message)["returncode"]
            self._conn.close()  # the server reaps the child: its pid is free from now on
        return self.returncode

    def poll(self) -> int | None:
        return self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        if self._collect(timeout) is None:
            raise TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:  # until the status is collected the pid is the child's, if a zombie
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, input=None, timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        if self._readers is None:
            def read(name, stream):
                with stream:
                    self._output[name] = stream.read()

            def write(stream):
                try:
                    if input:
                        stream.write(input)
                    stream.close()
                except BrokenPipeError:  # the child stopped reading: as subprocess does, not an error
                    try:
                        stream.close()
                    except BrokenPipeError:
                        pass
            self._readers = [threading.Thread(target=read, args=(name, getattr(self, name)), daemon=True)
                             for name in ("stdout", "stderr") if getattr(self, name) is not None]
            if self.stdin is not None:
                self._readers.append(threading.Thread(target=write, args=(self.stdin,), daemon=True))
            for reader in self._readers:
                reader.start()
        for reader in self._readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return self._output.get("stdout"), self._output.get("stderr")


_server: ForkServer | None = None
_server_lock = threading.Lock()


def _text_encoding() -> str:
    """The encoding of subprocess.Popen(text=True)."""
    if sys.flags.utf8_mode:
        return "utf-8"
    return locale.getencoding() if hasattr(locale, "getencoding") else locale.getpreferredencoding(False)


def _supported() -> bool:
    """Linux with pidfds (5.3) and descriptor passing (Python 3.9): what the server needs."""
    if not (hasattr(os, "pidfd_open") and hasattr(socket, "send_fds") and hasattr(os, "fork")):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:
        return False
    return True


SUPPORTED = _supported()


def _stable(env: dict) -> dict:
    return {key: value for key, value in env.items() if key not in VOLATILE}


def forkable(args, env: dict) -> bool:
    """Whether the server can run ``args`` in ``env``: ``python SCRIPT|-c CODE|-m MODULE ...`` in the
    server's environment (or any, before the server has started)."""
    if not SUPPORTED or not args or args[0] != sys.executable or len(args) < 2:
        return False
    if args[1] in ("-c", "-m") and len(args) < 3:
        return False
    if args[1].startswith("-") and args[1] not in ("-c", "-m"):
        return False
    return _server is None or _server.process.poll() is not None or _stable(env) == _server.env


def _get_server(env: dict) -> ForkServer:
    global _server
    with _server_lock:
        if _server is not None and _server.process.poll() is not None:  # it died: start another
            atexit.unregister(_server.close)
            _server.close()
            _server = None
        if _server is None:
            _server = ForkServer(env)
            atexit.register(_server.close)
        return _server


def fork(args: list[str], *, cwd=None, env: dict | None = None, stdin=None, stdout=None, stderr=None,
         text: bool = False, start_new_session: bool = False) -> ForkedProcess:
    """``args`` forked from the server, whatever ``TESTS_FORKSERVER`` says (ValueError if it cannot be)."""
    env = dict(os.environ if env is None else env)
    if not forkable(args, env):
        raise ValueError(f"the fork server cannot run {args[:3]} in this environment")
    return ForkedProcess(_get_server(env), args, cwd, env, stdin, stdout, stderr, text, start_new_session)


def popen(args: list[str], *, cwd=None, env: dict | None = None, stdin=None, stdout=None, stderr=None,
          text: bool = False, start_new_session: bool = False):
    """``subprocess.Popen(args, ...)``; forked from the server where it can be, unless TESTS_FORKSERVER=0."""
    env = dict(os.environ if env is None else env)
    if os.environ.get("TESTS_FORKSERVER", "1") != "0" and forkable(args, env):
        return fork(args, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, text=text,
                    start_new_session=start_new_session)
    return subprocess.Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, text=text,
                            start_new_session=start_new_session)


def run(args: list[str], *, cwd=None, env: dict | None = None, input=None, capture_output: bool = False,
        text: bool = False, timeout: float | None = None, check: bool = False, stdout=None,
        stderr=None) -> CompletedProcess:
    """``subprocess.run(args, ...)``, through ``popen``."""
    if capture_output:
        stdout = stderr = PIPE
    process = popen(args, cwd=cwd, env=env, stdin=None if input is None else PIPE, stdout=stdout, stderr=stderr,
                    text=text)
    try:
        out, err = process.communicate(input, timeout=timeout)
    except TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    except BaseException:
        process.kill()
        raise
    result = CompletedProcess(args, process.returncode, out, err)
    if check:
        result.check_returncode()
    return result


if __name__ == "__main__":
    serve(sys.argv[1])
