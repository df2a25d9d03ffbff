"""Several synchronous calls in flight on Python threads, for runtimes whose own API has no async
requests (ONNX Runtime: one InferenceSession run from several threads is its documented thread-safe
pattern, and run() releases the GIL). Written by hand because the standard pools fit neither use:

- `ThreadLoops` (the timing loop): N threads each call `call(k)` back to back, as a hand-written
  benchmark loop would, and report every completion on one queue; the consumer (timed_loop's step)
  takes one completion per step. No thread waits for the consumer before starting its next call,
  so the consumer's own scheduling costs the runtime nothing.
- `ordered_stream` (the accuracy pass): batches in input order with up to `depth` in flight.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

_STOP = object()


class ThreadLoops:
    """N threads calling call(k) (k = the thread's index) back to back until stop().

    start() runs one untimed call per thread (its first run allocates per-thread state), then
    holds every thread until the first next_completion(), so the clock and the work start together.
    next_completion() -> (latency ms, outputs) of the next call to finish (in completion order);
    stop() lets each thread finish the call it is in and returns those last completions."""

    def __init__(self, call: Callable[[int], object], threads: int, name: str = "infer"):
        self._call = call
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._go = threading.Event()
        self._halt = threading.Event()
        self._ready = threading.Barrier(threads + 1)
        self._threads = [threading.Thread(target=self._work, args=(k,), name=f"{name}-{k}", daemon=True)
                         for k in range(threads)]

    def _work(self, k: int) -> None:
        try:
            self._call(k)  # warm-up, untimed
        except BaseException as exc:  # reported to the consumer, which raises it
            self._done.put(exc)
            self._ready.abort()
            return
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            return
        self._go.wait()
        while not self._halt.is_set():
            t0 = time.perf_counter()
            try:
                outputs = self._call(k)
            except BaseException as exc:
                self._done.put(exc)
                return
            self._done.put(((time.perf_counter() - t0) * 1e3, outputs))
        self._done.put(_STOP)

    def start(self) -> ThreadLoops:
        for thread in self._threads:
            thread.start()
        try:
            self._ready.wait()
        except threading.BrokenBarrierError:
            self._raise_first_error()
        except BaseException:  # Ctrl-C while the warm-up calls run: they end before anything else does
            self._ready.abort()
            self.stop()
            raise
        return self

    def next_completion(self) -> tuple[float, object]:
        self._go.set()
        item = self._done.get()
        if isinstance(item, BaseException):
            try:
                self.stop()
            except BaseException:  # a second thread's error: the first one is what is reported
                pass
            raise item
        return item

    def stop(self) -> list[tuple[float, object]]:
        """Stop every thread after its current call; the completions not yet taken, in order."""
        self._halt.set()
        self._go.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join()
        rest = []
        error = None
        while True:
            try:
                item = self._done.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, BaseException):
                error = error or item
            elif item is not _STOP:
                rest.append(item)
        if error is not None:
            raise error
        return rest

    def _raise_first_error(self) -> None:
        for thread in self._threads:
            thread.join()
        while True:
            item = self._done.get()
            if isinstance(item, BaseException):
                raise item


def ordered_stream(items: Iterable, call: Callable, depth: int) -> Iterator[tuple[object, object, float]]:
    """(batch, tag, extras) items -> (tag, call(batch, extras), seconds) in input order, with up to
    `depth` calls running at once on `depth` threads; seconds is each call's own duration."""
    if depth <= 1:
        for batch, tag, extras in items:
            t0 = time.perf_counter()
            outputs = call(batch, extras)
            yield tag, outputs, time.perf_counter() - t0
        return

    def timed(batch, extras):
        t0 = time.perf_counter()
        outputs = call(batch, extras)
        return outputs, time.perf_counter() - t0

    pending: deque = deque()
    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="infer") as pool:
        try:
            for batch, tag, extras in items:
                if len(pending) >= depth:
                    done_tag, future = pending.popleft()
                    yield (done_tag, *future.result())
                pending.append((tag, pool.submit(timed, batch, extras)))
            while pending:
                done_tag, future = pending.popleft()
                yield (done_tag, *future.result())
        finally:
            for _, future in pending:  # abandoned early (an error downstream): let running calls end
                future.cancel()
