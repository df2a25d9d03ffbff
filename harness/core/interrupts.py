"""Ctrl-C and SIGTERM: the first one stops the command cleanly, later ones wait for that.

The first SIGINT or SIGTERM raises KeyboardInterrupt in the main thread, as Ctrl-C does, and from
then on both signals are ignored: the unwinding (runtime requests in flight finishing, their worker
threads joined, the lock released) is never cut short by a second Ctrl-C, which used to leave
ONNX Runtime threads running while the interpreter exited ("terminate called without an active
exception", exit -6) or print a traceback from a destructor. Code that would record a failure
asks `requested()` first: an error caused by the interrupt (an import cut short, a request
cancelled) is not the row's failure. A signal that lands after the command has finished (during
interpreter exit) is ignored too, so the exit status stays the command's own.
"""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_STATUS = 130  # docs/errors.md: Ctrl-C and SIGTERM alike

_received: int | None = None


def requested() -> int | None:
    """The signal that interrupted this command, or None."""
    return _received


def check() -> None:
    """Raise KeyboardInterrupt when the command has been interrupted (a failure recorded now would
    be the interrupt's, not the work's)."""
    if _received is not None:
        raise KeyboardInterrupt


def _first(signum, frame):
    global _received
    if _received is not None:
        return
    _received = signum
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)  # the unwinding runs to its end
    raise KeyboardInterrupt


def install() -> dict:
    """Handle both signals for the life of one command; returns the previous handlers (restore())."""
    global _received
    _received = None
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    for sig in SIGNALS:
        signal.signal(sig, _first)
    return previous


def restore(previous: dict, finished: bool) -> None:
    """After the command: the previous handlers again (in-process callers such as tests), or, when
    the harness owns the process and is about to exit, signals ignored so exit keeps its status."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        if finished:  # SIG_IGN, not a Python handler: the interpreter resets those to the default at exit
            signal.signal(sig, signal.SIG_IGN)
        elif sig in previous and previous[sig] is not None:
            signal.signal(sig, previous[sig])
