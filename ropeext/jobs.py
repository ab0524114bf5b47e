"""A workflow job stops when the Snakemake process that started it is gone.

Snakemake runs a job as ``bash -c "... python -m ropeext.cli ..."``. Stopped with SIGTERM or Ctrl-C it
stops its jobs itself; killed outright (SIGKILL, an out-of-memory kill) it cannot, and the shell and
the command are re-parented and run on to their end, writing outputs a rerun may be writing too.
The kernel's parent-death signal (``prctl(PR_SET_PDEATHSIG)``, which ``ropeext.train.distributed``
uses for the workers of a launcher) does not help here: the command's parent is that ``bash -c``
shell, which lives on when Snakemake dies.

So the workflow names itself: ``export_workflow_pid`` (the Snakefile, on every parse) puts the pid
of the Snakemake process in ``ROPEEXT_WORKFLOW_PID``, which its jobs inherit, and every
``python -m ropeext.cli`` started with it watches that process (``watch_workflow``). When it is
gone, the job gets SIGTERM, which ends it as a cancelled job does (its MLflow run closes as
KILLED, its output locks are released), and SIGKILL when it has not ended within a grace period
(a long native call that does not return to Python). The workers of a multi-process fine-tune
run ``ropeext.cli`` too and watch the same process; their launcher ends with them.

Under a cluster executor a job runs under a Snakemake process of its own on its node, which parses
the Snakefile and names itself in turn.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import time

WORKFLOW_PID = "ROPEEXT_WORKFLOW_PID"
GRACE_SECONDS = 30.0  # from SIGTERM to SIGKILL
POLL_SECONDS = 1.0  # where pidfd_open is missing (not Linux, or a kernel before 5.3)


def export_workflow_pid() -> None:
    """Name this (Snakemake) process to the jobs it starts."""
    os.environ[WORKFLOW_PID] = str(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _wait_for_exit(pid: int, poll: float) -> None:
    """Return when process ``pid`` has ended."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        while _alive(pid):
            time.sleep(poll)
        return
    try:
        select.select([fd], [], [])  # a pidfd turns readable when its process ends
    finally:
        os.close(fd)


def watch_workflow(env=None, grace: float = GRACE_SECONDS, poll: float = POLL_SECONDS) -> threading.Thread | None:
    """Under a workflow (``ROPEEXT_WORKFLOW_PID`` set), a daemon thread that sends this process SIGTERM when
    that process is gone, then SIGKILL after ``grace`` seconds; None outside a workflow."""
    env = os.environ if env is None else env
    value = env.get(WORKFLOW_PID, "")
    if not value.isdigit() or int(value) == os.getpid():
        return None
    pid = int(value)

    def watch():
        _wait_for_exit(pid, poll)
        print(f"ropeext: the workflow (Snakemake, pid {pid}) that started this job is gone; stopping", file=sys.stderr)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)  # the main thread runs the handler
        time.sleep(grace)
        os.kill(os.getpid(), signal.SIGKILL)

    thread = threading.Thread(target=watch, name="ropeext-workflow-watch", daemon=True)
    thread.start()
    return thread
