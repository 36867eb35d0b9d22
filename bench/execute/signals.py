"""How a command stops on SIGINT or SIGTERM: the first one raises `Interrupted` where the command is, so that its
cleanup runs (claims given back, MLflow runs marked KILLED, worker processes stopped); any later one is ignored.
Shared by the command line and its worker processes."""

from __future__ import annotations

import signal
import sys
from typing import Any


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


STOPPING = {"now": False}
"""Set by the first SIGINT/SIGTERM of a command (reset by `main`)."""


def ignore_late_signals() -> None:
    """Keep quiet about a signal that Python finds pending after `stop_on_signal` set SIG_IGN (it reports that as
    'Signal N ignored due to race condition'): a second signal during cleanup is ignored, as promised."""
    default_hook = sys.unraisablehook
    if getattr(default_hook, "drops_late_signals", False):
        return

    def hook(unraisable: Any) -> None:
        if not (isinstance(unraisable.exc_value, OSError) and "ignored due to race condition" in str(
                unraisable.exc_value)):
            default_hook(unraisable)

    hook.drops_late_signals = True
    sys.unraisablehook = hook


def stop_on_signal(signum: int, frame: Any) -> None:
    """Turn the first SIGINT/SIGTERM into `Interrupted` and ignore any later one, so that cleanup runs once (a
    second signal already pending when the first is handled, e.g. Ctrl-C to the group and then the parent's SIGTERM
    to its workers, is dropped here)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if STOPPING["now"]:
        return
    STOPPING["now"] = True
    raise Interrupted(signum)
