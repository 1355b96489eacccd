"""Ctrl-C and SIGTERM held back while native code that cannot take an exception mid-call runs.

A signal's Python handler runs between two bytecodes of the main thread, wherever they are: an
exception raised there inside a library's extension (openTSNE's quad tree, being built) can leave
it half made, and a Ctrl-C during the map was seen to end the build with a segmentation fault.
Inside :func:`held`, the signal is only noted; :meth:`Held.deliver`, called where an exception is
safe, and the end of the block run the handler it would have run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

HELD = (signal.SIGINT, signal.SIGTERM)


class Held:
    """The signals noted while held, and the handlers they would have run."""

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {}
        self._noted: list[tuple[int, FrameType | None]] = []

    def note(self, signum: int, frame: FrameType | None) -> None:
        self._noted.append((signum, frame))

    def deliver(self) -> None:
        """Run the handler of the first signal noted, if any (it raises, as a rule: Ctrl-C's
        raises KeyboardInterrupt); a signal whose default is to end the process ends it."""
        if not self._noted:
            return
        signum, frame = self._noted[0]
        self._noted.clear()
        handler = self.handlers[signum]
        if callable(handler):
            handler(signum, frame)
        elif handler == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)


@contextlib.contextmanager
def handling(
    signums: tuple[int, ...], handler: Callable[[int, FrameType | None], Any]
) -> Iterator[dict[int, Any]]:
    """``handler`` handles each of ``signums`` while the block runs, and the handlers it replaced
    (yielded, by signal) again after. A signal ignored, or handled outside Python, is left as it
    is; off the main thread, where no handler can be set, every one is."""
    replaced: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signums:
            previous = signal.getsignal(signum)
            if previous not in (signal.SIG_IGN, None):
                replaced[signum] = previous
                signal.signal(signum, handler)
    try:
        yield replaced
    finally:
        for signum, previous in replaced.items():
            signal.signal(signum, previous)


@contextlib.contextmanager
def held() -> Iterator[Held]:
    """Note Ctrl-C and SIGTERM instead of handling them while the block runs; handle the first
    noted at its end (or where the block calls :meth:`Held.deliver`)."""
    holding = Held()
    try:
        with handling(HELD, holding.note) as holding.handlers:
            yield holding
    finally:
        holding.deliver()
