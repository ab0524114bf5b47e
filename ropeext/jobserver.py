"""A warm process that local workflow jobs fork from, so that a job does not pay Python's start-up.

A job of the workflow is ``python -m ropeext.cli ...``; importing torch and transformers alone takes
about 3 s of a job that may do a second of work. When the workflow runs jobs on this host, it starts
one server (``serve``) that imports them once; each job then runs ``python -m ropeext.jobserver run
-- ARGS``, a client that imports nothing heavy and asks the server to fork a worker for ``ropeext
ARGS`` with the client's working directory, environment and standard streams. The worker is the
job: its output goes to the job's log, its exit status becomes the client's, and a signal sent to the
client (Snakemake cancelling a job) is passed on to it. When the client goes away the worker is
killed.

Where the server cannot be reached (not started, ``job_server: false``, a job on another host, a
different interpreter such as a conda environment's), the client replaces itself with the plain
``python -m ropeext.cli ARGS``: the same job, started cold.

The server never runs an operation on tensors itself: a process forked after OpenMP has run a
parallel region hangs in its own first one. It exits when the process that started it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import sys
import tempfile
import time

ENV = "ROPEEXT_JOB_SERVER"  # the socket of the server; jobs inherit it from the workflow
# modules, and "module:attribute" for the names transformers imports lazily on first access
PRELOAD = ("numpy", "pandas", "torch", "transformers:LlamaConfig", "transformers:LlamaForCausalLM",
           "transformers:AutoConfig", "transformers:AutoModelForCausalLM", "transformers:AutoTokenizer",
           "transformers:PreTrainedTokenizerFast", "transformers:GenerationConfig", "transformers.modeling_rope_utils",
           "safetensors.torch", "tokenizers", "pyarrow.parquet", "jsonschema", "mlflow",
           "mlflow.store.tracking.sqlalchemy_store", "lm_eval.evaluator", "lm_eval.tasks", "lm_eval.models.huggingface",
           "ropeext.cli", "ropeext.modeling", "ropeext.attention", "ropeext.data.packing", "ropeext.rope",
           "ropeext.train.loop", "ropeext.eval.common", "ropeext.tracking")
_MAX_MESSAGE = 1 << 22


# -- the workflow's side: start and stop one server per invocation ------------------------------------

def start(log: str | os.PathLike, python: str = sys.executable) -> tuple[int, str] | None:
    """Start a server in the background, writing to ``log``; return (pid, socket path), or None if it
    could not start.

    Jobs reach it through ``ROPEEXT_JOB_SERVER``, which this sets. The server binds its socket only
    once its imports are done, so the first jobs simply start cold. The socket lives in a fresh
    folder under the temporary directory (a socket path must stay short).
    """
    import subprocess

    folder = tempfile.mkdtemp(prefix="ropeext-jobs-")
    path = os.path.join(folder, "socket")
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    log = open(log, "ab")
    try:
        proc = subprocess.Popen([python, "-m", "ropeext.jobserver", "serve", "--socket", path,
                                 "--parent", str(os.getpid())],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    except OSError:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        return None
    finally:
        log.close()
    os.environ[ENV] = path
    return proc.pid, path


def stop(server: tuple[int, str] | None) -> None:
    """Stop a server that ``start`` started (running jobs keep running to their end)."""
    os.environ.pop(ENV, None)
    if not server:
        return
    pid, path = server
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    for _ in range(50):  # it removes its socket on the way out; the folder is ours
        if not os.path.exists(path):
            break
        time.sleep(0.05)
    import shutil

    shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def _identity() -> dict:
    """What must match between server and client for a worker to be the job a cold start would be."""
    import ropeext

    return {"executable": os.path.abspath(sys.executable), "prefix": sys.prefix,
            "package": os.path.abspath(ropeext.__file__)}


# -- the server ------------------------------------------------------------------------------------

def _send(conn: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode() + b"\n"
    sent = socket.send_fds(conn, [data], fds) if fds else 0
    if sent < len(data):  # nothing more to write once all went with the descriptors: the peer may be gone
        conn.sendall(data[sent:])


def _read(reader) -> dict | None:
    """The next newline-terminated message from a connection's buffered reader (None at its end): the
    server's messages may arrive together, so the client reads them line by line."""
    line = reader.readline(_MAX_MESSAGE)
    return json.loads(line) if line.endswith(b"\n") else None


def _receive(conn: socket.socket, want_fds: int = 0) -> tuple[dict | None, list[int]]:
    """The client's request: one newline-terminated JSON message (None at end of stream), and the
    descriptors sent with it."""
    buf, fds = b"", []
    while not buf.endswith(b"\n"):
        if want_fds and not fds:
            chunk, fds, _, _ = socket.recv_fds(conn, 1 << 16, want_fds)
        else:
            chunk = conn.recv(1 << 16)
        if not chunk:
            return None, fds
        buf += chunk
        if len(buf) > _MAX_MESSAGE:
            raise ValueError("job server message too long")
    return json.loads(buf), fds


def serve(path: str, parent: int | None) -> int:
    """Import the heavy modules, then fork one handler per connection until the parent ends."""
    import importlib

    for name in PRELOAD:
        module, _, attribute = name.partition(":")
        try:
            loaded = importlib.import_module(module)
            if attribute:
                getattr(loaded, attribute)
        except Exception as exc:  # noqa: BLE001 - a job that needs the module imports it and reports
            print(f"job server: not preloaded: {name} ({type(exc).__name__}: {exc})", flush=True)
    import threading

    from ropeext.config import load_schema
    from ropeext.io import pyplot

    load_schema()  # parsed once here rather than in every job
    pyplot()  # matplotlib on the Agg backend
    if threading.active_count() > 1:  # a fork copies only the forking thread, not the locks others hold
        print(f"job server: not serving, {threading.active_count() - 1} thread(s) started by the preloads: "
              f"{[t.name for t in threading.enumerate()]}", flush=True)
        return 1
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # handlers are reaped by the kernel
    done = []
    signal.signal(signal.SIGTERM, lambda *_: done.append(True))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp = f"{path}.{os.getpid()}"
    server.bind(tmp)
    os.replace(tmp, path)  # clients see the socket only once it accepts
    server.listen(64)
    print(f"job server {os.getpid()} ready at {path} ({len(PRELOAD)} modules preloaded)", flush=True)
    try:
        while not done and (parent is None or os.getppid() == parent):
            try:
                ready, _, _ = select.select([server], [], [], 1.0)
            except InterruptedError:
                continue
            if not ready:
                continue
            conn, _ = server.accept()
            if os.fork() == 0:  # the handler: whatever happens, it never returns into this loop
                code = 1
                try:
                    server.close()
                    code = _handle(conn)
                finally:
                    os._exit(code)
            conn.close()
    finally:
        server.close()
        for remove in (os.unlink, os.rmdir):  # the socket, then its folder (``start`` made it for it alone)
            try:
                remove(path if remove is os.unlink else os.path.dirname(path))
            except OSError:
                pass
    return 0


def _handle(conn: socket.socket) -> int:
    """In a child of the server: fork the worker for one request, report its pid and exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        _send(conn, {"pid": os.getpid(), **_identity()})
        request, fds = _receive(conn, want_fds=3)
        if request is None or len(fds) != 3:
            return 1
        worker = os.fork()
        if worker == 0:
            conn.close()
            _work(request, fds)  # never returns
        for fd in fds:
            os.close(fd)
        print(f"job {worker}: {' '.join(request['argv'])}", flush=True)
        _send(conn, {"pid": worker})
        status = _wait(worker, conn)
        _send(conn, {"status": status})
    except (OSError, ValueError):  # a client that went away or sent something else
        return 1
    return 0


def _wait(worker: int, conn: socket.socket) -> int:
    """The worker's exit status; the worker is killed if the client goes away before it ends."""
    while True:
        pid, raw = os.waitpid(worker, os.WNOHANG)
        if pid:
            return os.waitstatus_to_exitcode(raw) if os.WIFEXITED(raw) else 128 + os.WTERMSIG(raw)
        ready, _, _ = select.select([conn], [], [], 0.2)
        if ready and not conn.recv(4096):  # the client is gone (it sends nothing after its request)
            _end(worker)
            return 1


def _end(worker: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the worker."""
    os.kill(worker, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if os.waitpid(worker, os.WNOHANG)[0]:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    os.waitpid(worker, 0)


def _work(request: dict, fds: list[int]) -> None:
    """In the worker: become the job (streams, directory, environment, threads), run it, exit."""
    import atexit

    code = 1
    try:
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        threads = os.environ.get("OMP_NUM_THREADS", "")
        if threads.isdigit() and int(threads) > 0:
            import torch

            torch.set_num_threads(int(threads))
        sys.argv = ["ropeext", *request["argv"]]
        from ropeext.cli import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int) and exc.code is not None:
            print(exc.code, file=sys.stderr)
    except BaseException:  # what a cold process would print before exiting with status 1
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# -- the client ------------------------------------------------------------------------------------

def _cold(argv: list[str]) -> None:
    os.execv(sys.executable, [sys.executable, "-m", "ropeext.cli", *argv])


def run(argv: list[str]) -> int:
    """Run ``ropeext ARGV`` in a worker of the server named by ``ROPEEXT_JOB_SERVER``, or cold."""
    path = os.environ.get(ENV)
    if not path:
        _cold(argv)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        reader = conn.makefile("rb")
        hello = _read(reader)
    except (OSError, ValueError):
        hello = None
    if not hello or any(hello.get(k) != v for k, v in _identity().items()):
        conn.close()
        _cold(argv)
    sys.stdout.flush()
    _send(conn, {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}, [0, 1, 2])
    started = _read(reader)
    if started is None:
        print("error: the job server closed the connection before the job started", file=sys.stderr)
        return 1
    worker = int(started["pid"])

    def forward(signum, _frame):
        try:
            os.kill(worker, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    finished = _read(reader)
    if finished is None:
        print(f"error: lost the job server while the job (pid {worker}) ran", file=sys.stderr)
        return 1
    return int(finished["status"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ropeext.jobserver", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve", help="import the heavy modules and fork a worker per job")
    s.add_argument("--socket", required=True)
    s.add_argument("--parent", type=int, default=None, help="exit when this process is no longer the parent")
    r = sub.add_parser("run", help="run `ropeext ARGS` in a worker of the server, or cold")
    r.add_argument("args", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    if args.mode == "serve":
        return serve(args.socket, args.parent)
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
