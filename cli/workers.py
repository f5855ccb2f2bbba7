"""``dagnn serve --workers N``: N forked processes serving one listening socket, and the parent that
supervises them.

The parent has checked the options and bound the socket; it forks the workers before anything is loaded
(no model, no index connection, no thread yet), so each worker opens its own, and the kernel hands each new
connection to one of the workers waiting on the shared socket. A worker tells the parent on a pipe once it
serves, or why it could not start (one line, which the parent prints once however many workers failed).
The parent turns SIGTERM and SIGINT into a SIGTERM to each worker (each finishes its requests; a second
signal kills them), replaces a worker that dies while serving, and gives up when workers keep dying
(``DEATHS`` within ``WINDOW_S`` seconds). No typer, no uvicorn here: ``run`` is what a worker does.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import sys
import time
import traceback
from typing import Callable

from dagnn_runtime.errors import DagnnError

log = logging.getLogger("dagnn_cli.workers")
DEATHS, WINDOW_S = 5, 30.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
GRACEFUL = (0, -signal.SIGTERM, -signal.SIGINT)  # uvicorn re-raises the signal it stopped on


def exit_status(code: int) -> str:
    """``os.waitstatus_to_exitcode``'s value in words: "exit status 3", "signal SIGKILL"."""
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


def supervise(n: int, run: Callable[[Callable[[], None]], None]) -> None:
    """Fork ``n`` workers, each calling ``run(ready)`` (``ready()`` once it serves; a ``DagnnError`` it raises
    is its one-line reason for not starting), and watch them until SIGTERM or SIGINT. Raises ``DagnnError``
    when a worker fails to start or workers keep dying; returns once every worker stopped gracefully."""
    Workers(n, run).main()


class Workers:
    def __init__(self, n: int, run: Callable[[Callable[[], None]], None]):
        self.n, self.run, self.parent = n, run, os.getpid()
        self.serving: dict = {}    # pid -> whether it said it serves
        self.errors: dict = {}     # pid -> its one-line reason for not starting
        self.deaths: list = []     # when workers died unexpectedly (monotonic)
        self.up = False            # every first worker served once: a death is now replaced, not fatal
        self.signals = 0
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        self._pending = b""

    def main(self) -> None:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        failure = None
        try:
            for _ in range(self.n):
                self._fork()
            failure = self._watch()
        finally:
            stopped = self._stop()
            failure = failure or stopped
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(self._read)
            os.close(self._write)
        if failure:
            raise DagnnError(failure)

    def _on_signal(self, signum, frame) -> None:
        self.signals += 1  # acted on by the loops below, not here

    # ---- the worker's side ------------------------------------------------------------------------------
    def _fork(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # a stop signal waits until the child's are reset
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            raise DagnnError(f"cannot start a worker process ({exc.strerror})") from None
        if pid:
            self.serving[pid] = False
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            return
        code = 1
        try:  # the child: never returns into the parent's code
            os.close(self._read)
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)  # uvicorn installs its own while serving
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            _die_with(self.parent)
            self.run(lambda: self._tell("ready"))
            code = 0
        except DagnnError as exc:
            self._tell("error", str(exc))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - a bug: its traceback, then the exit status tells the parent
            traceback.print_exc()
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os._exit(code)

    def _tell(self, kind: str, text: str = "") -> None:
        line = f"{kind} {os.getpid()} {' '.join(text.split())}".encode()[:4000] + b"\n"
        os.write(self._write, line)  # under PIPE_BUF: written whole, never mixed with another worker's

    # ---- the parent's side ------------------------------------------------------------------------------
    def _messages(self, timeout: float = 0.0) -> None:
        try:
            if select.select([self._read], [], [], timeout)[0]:
                while chunk := os.read(self._read, 65536):
                    self._pending += chunk
        except BlockingIOError:
            pass
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            kind, pid, text = (line.decode(errors="replace").split(" ", 2) + ["", ""])[:3]
            if int(pid) not in self.serving:
                continue
            if kind == "ready":
                self.serving[int(pid)] = True
                if self.up:
                    log.info("worker %s serving", pid)
            elif kind == "error":
                self.errors[int(pid)] = text
        if not self.up and len(self.serving) == self.n and all(self.serving.values()):
            self.up = True
            log.info("%d workers serving (pids %s)", self.n, " ".join(map(str, self.serving)))

    def _reap(self) -> list:
        ended = []
        for pid in list(self.serving):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                ended.append((pid, os.waitstatus_to_exitcode(status)))
        self._messages()  # what they wrote before they ended is in the pipe by now
        return [(pid, code, self.serving.pop(pid), self.errors.pop(pid, None)) for pid, code in ended]

    def _watch(self) -> str | None:
        """Until a stop signal: replace workers that die; the reason to give up, if any."""
        while not self.signals:
            self._messages(0.2)
            for pid, code, served, error in self._reap():
                if not self.up and not served:
                    return error or f"a worker (pid {pid}) ended with {exit_status(code)} before serving"
                now = time.monotonic()
                self.deaths = [t for t in self.deaths if now - t < WINDOW_S] + [now]
                again = len(self.deaths) < DEATHS
                log.warning("worker %d ended with %s%s%s", pid, exit_status(code), f" ({error})" if error else "",
                            "; starting another" if again else "")
                if not again:
                    return f"workers keep dying ({len(self.deaths)} within {WINDOW_S:.0f} s): stopped"
                self._fork()
        return None

    def _stop(self) -> str | None:
        """SIGTERM to every worker, then wait for them (SIGKILL after a second signal)."""
        self._kill(signal.SIGTERM)
        signals, failed = self.signals, []
        while self.serving:
            if self.signals > max(signals, 1):
                self._kill(signal.SIGKILL)
                signals = self.signals
            time.sleep(0.05)
            failed += [f"worker {pid} ended with {exit_status(code)}" for pid, code, _, error in self._reap()
                       if code not in GRACEFUL and not error]
        return "; ".join(failed) or None

    def _kill(self, sig) -> None:
        for pid in self.serving:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


def _die_with(parent: int) -> None:
    """Linux: this worker gets SIGTERM when the parent dies (kill -9 included), so none is left behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)
