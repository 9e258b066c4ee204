"""Children that end with their supervisor, even one killed by SIGKILL.

`meetinghooks run` and `meetinghooks worker` start each child in a session of its own, so a
signal sent to the supervisor's process group never reaches them. A process manager that gives
up waiting and sends SIGKILL (honcho, systemd with KillMode=process, a container runtime) would
then leave the receiver and the pools running as orphans. On Linux the kernel can send a signal
to a child when its parent dies: each child asks for SIGTERM, so it still shuts down warm.

The request is made by a small launcher that then becomes the command (exec), not by a
`preexec_fn`, which is unsafe in a parent with threads (the metrics server is one).

    python -m meetinghooks.parent_death PARENT_PID COMMAND [ARG...]
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def launched(argv: Sequence[str]) -> list[str]:
    """Return `argv` to run so that it gets SIGTERM when this process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-m", "meetinghooks.parent_death", str(os.getpid()), *argv]


def main(args: Sequence[str]) -> None:
    parent, *argv = args
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    # The parent may have died before the request: then no signal would ever come.
    if os.getppid() != int(parent):
        raise SystemExit(143)
    os.execvp(argv[0], argv)  # noqa: S606  (our own argv, no shell; the request survives exec)


if __name__ == "__main__":
    main(sys.argv[1:])
