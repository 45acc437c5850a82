"""Run several training loops in one process, in turns, and time their steps.

Each route (a Lightning ``fit``, a transformers ``Trainer.train``) runs unmodified in its own thread.
A :class:`Baton` lets one route run at a time: after every block of steps the running route hands over
to the next and waits for its turn, so all routes see the same machine conditions (load from other
processes, CPU frequency) in alternation, and the ratio of their throughputs stays meaningful on a
noisy machine. A route's step is timed from the end of its previous step, so it includes fetching
and collating the batch, the forward and backward passes, the optimiser and the loop's own work; the
time spent waiting for the baton is not counted.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch


class Baton:
    """Turn-taking between named routes; a route that finished leaves the rotation."""

    def __init__(self, names: list[str]):
        self.active = list(names)
        self.turn = self.active[0] if self.active else None
        self.condition = threading.Condition()

    def wait(self, name: str) -> None:
        with self.condition:
            self.condition.wait_for(lambda: self.turn == name)

    def hand_over(self, name: str) -> None:
        """Give the turn to the route after ``name`` and wait until it comes back."""
        with self.condition:
            self._advance(name)
            self.condition.wait_for(lambda: self.turn == name)

    def leave(self, name: str) -> None:
        with self.condition:
            if name in self.active:
                if self.turn == name:
                    self._advance(name)
                self.active.remove(name)
                if not self.active:
                    self.turn = None
                self.condition.notify_all()

    def _advance(self, name: str) -> None:
        position = self.active.index(name)
        self.turn = self.active[(position + 1) % len(self.active)]
        self.condition.notify_all()


@dataclass
class StepClock:
    """Times the optimiser steps of one route and counts the tokens its model saw in training.

    Call :meth:`watch` on the model (a forward pre-hook reads ``attention_mask``) and :meth:`step_done`
    at the end of every optimiser step (from a Lightning or transformers callback). On a GPU nothing is
    read back per step (that would make each step wait for the one before, which no training loop
    does): the token counts stay on the device until :meth:`summary`, and the clock synchronises only
    where a block of timed steps starts or ends, so a block's time holds all of its GPU work.
    """

    name: str
    baton: Baton
    warmup_steps: int
    block_steps: int
    steps: int = 0
    seconds: list[float] = field(default_factory=list)
    padded_tokens: list[int] = field(default_factory=list)
    _step_lengths: list[torch.Tensor] = field(default_factory=list)  # per timed step, its rows' lengths
    _pending: list[torch.Tensor] = field(default_factory=list)  # this step's forwards' row lengths
    _pending_padded: int = 0
    _cuda: bool = False
    _last: float = 0.0

    def watch(self, model: torch.nn.Module) -> None:
        model.register_forward_pre_hook(self._count_tokens, with_kwargs=True)

    def _count_tokens(self, module, args, kwargs) -> None:
        mask = kwargs.get("attention_mask")
        if not (module.training and torch.is_grad_enabled()) or mask is None:
            return
        self._cuda = mask.is_cuda
        self._pending.append(mask.sum(dim=1))
        self._pending_padded += mask.numel()

    def start(self) -> None:
        self._last = time.perf_counter()

    def step_done(self) -> None:
        self.steps += 1
        timed = self.steps - self.warmup_steps
        hand_over = timed == 0 or (timed > 0 and timed % self.block_steps == 0)
        if self._cuda and hand_over:
            torch.cuda.synchronize()  # the block's queued GPU work belongs to it, not to the next route's
        now = time.perf_counter()
        if timed > 0:
            self.seconds.append(now - self._last)
            self._step_lengths.append(torch.cat(self._pending) if self._pending else torch.zeros(0))
            self.padded_tokens.append(self._pending_padded)
        self._pending, self._pending_padded = [], 0
        if hand_over:
            self.baton.hand_over(self.name)
        self._last = time.perf_counter()

    @property
    def real_tokens(self) -> list[int]:
        """Real (non-padding) tokens of each timed step."""
        return [int(lengths.sum()) for lengths in self._step_lengths]

    @property
    def lengths(self) -> list[int]:
        """Token count of every row the timed steps trained on."""
        return [length for lengths in self._step_lengths for length in lengths.tolist()]

    def summary(self) -> dict[str, float]:
        seconds = sum(self.seconds)
        real, padded = sum(self.real_tokens), sum(self.padded_tokens)
        return {
            "timed_steps": len(self.seconds),
            "seconds": seconds,
            "seconds_per_step": seconds / max(len(self.seconds), 1),
            "real_tokens": real,
            "real_tokens_per_second": real / seconds if seconds else 0.0,
            "padding_fraction": 1 - real / padded if padded else 0.0,
            "mean_length": real / max(len(self.lengths), 1),
        }


def run_in_turns(routes: dict[str, callable], baton: Baton) -> dict[str, BaseException]:
    """Run each ``routes[name]()`` in its own thread, starting in turn order; return their errors."""
    errors: dict[str, BaseException] = {}

    def run(name: str, function) -> None:
        try:
            baton.wait(name)
            function()
        except BaseException as error:  # reported by the caller, after the other routes finished
            errors[name] = error
        finally:
            baton.leave(name)

    threads = [threading.Thread(target=run, args=item, name=item[0]) for item in routes.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
