"""Stopping a run cleanly on SIGINT (Ctrl-C), SIGTERM (kill, SLURM's time limit and preemption)
and SIGUSR1 / SIGUSR2 (the early warnings SLURM sends with ``--signal``; submitit uses USR2).

While the run trains, a signal only sets a flag. At the end of the current training step (or
epoch) the run saves its checkpoint and raises ``RunInterrupted``; under DDP all processes agree
on that step, so none is left waiting in a collective operation. Outside training (reading data,
building the model, testing) nothing is half done and ``RunInterrupted`` is raised at once. A
second Ctrl-C stops at once too. After the run has written its record, ``exit_interrupted``
passes the signal on to the handler that was installed before the run (submitit's, which
requeues the job), or exits with status 128 + the signal number, as a shell does.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

import torch

log = logging.getLogger("dcnn")

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class RunInterrupted(BaseException):
    """The run stopped on a signal. A BaseException, like KeyboardInterrupt, so that no
    ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal_name(signum)}")


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class InterruptGuard:
    """Signal handlers for the duration of one run (a context manager).

    ``deferring`` is True while training: a signal then waits for ``stop_requested``, which the
    checkpoint callback asks at every step and epoch end. ``recording`` is True while the run
    writes its record: every signal, a second Ctrl-C too, is only noted, and acted on after.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferring = False
        self.recording = False
        self.previous: dict[int, Callable | int | None] = {}

    def __enter__(self) -> InterruptGuard:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.getsignal(signum) for signum in HANDLED_SIGNALS}
            self.install()
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)

    def install(self) -> None:
        """(Re)install the handlers; Lightning installs its own SIGTERM handler at fit start."""
        if self.previous:
            for signum in HANDLED_SIGNALS:
                signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame) -> None:
        if self.recording:
            self.signum = self.signum or signum
            return
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # a second Ctrl-C: stop now
            return
        self.signum = signum
        if not self.deferring:
            raise RunInterrupted(signum)
        print(
            f"[dcnn] {signal_name(signum)} received: saving a checkpoint at the end of this "
            "training step, then stopping (Ctrl-C again stops at once)",
            file=sys.stderr,
            flush=True,
        )

    def stop_requested(self, trainer) -> int | None:
        """The signal to stop on, agreed by all DDP processes (the largest number received)."""
        signum = self.signum or 0
        if trainer.world_size > 1:
            flag = torch.tensor([signum], device=trainer.strategy.root_device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            signum = int(flag.item())
        return signum or None


def exit_interrupted(signum: int) -> None:
    """After the run (its guard restored the handlers): hand ``signum`` to the handler that was
    installed before the run, or exit with 128 + signum."""
    previous = signal.getsignal(signum)
    if callable(previous) and previous is not signal.default_int_handler:
        previous(signum, None)  # e.g. submitit: checkpoint the job, requeue it, exit
    raise SystemExit(128 + signum)
