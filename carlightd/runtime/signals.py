"""Signal handling at an entry point (`carlightd run`, the dashboard, the demo, the fleet, the
embedded broker): handlers on the running loop for as long as the entry point runs, and the
process's previous handlers back afterwards — a library never keeps signals it was lent."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Collection, Iterator, Mapping

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def handled(
    handlers: Mapping[signal.Signals, Callable[[], object]],
    *,
    ignore_after: Collection[signal.Signals] = (),
) -> Iterator[None]:
    """Run each handler (on the loop) when its signal arrives, inside the `with`.

    Afterwards each signal gets its previous handler back, or is ignored if it is in
    `ignore_after`: a late second Ctrl-C after a clean stop must not turn into a
    KeyboardInterrupt on the way out of the process."""
    loop = asyncio.get_running_loop()
    previous = {signum: signal.getsignal(signum) for signum in handlers}
    installed: list[signal.Signals] = []
    try:
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
            installed.append(signum)
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)
            before = previous[signum]
            if signum in ignore_after:
                signal.signal(signum, signal.SIG_IGN)
            else:  # None: set outside Python, so not restorable; the default is the safe guess
                signal.signal(signum, signal.SIG_DFL if before is None else before)


def stopping(
    stop: Callable[[], object],
    *,
    also: Mapping[signal.Signals, Callable[[], object]] | None = None,
    ignore_after: Collection[signal.Signals] = (),
) -> contextlib.AbstractContextManager[None]:
    """SIGTERM and SIGINT call `stop` (and `also` maps further signals) inside the `with`."""
    return handled({**dict.fromkeys(STOP_SIGNALS, stop), **(also or {})}, ignore_after=ignore_after)
