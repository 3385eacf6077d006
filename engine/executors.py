"""Where evaluations run. The search hands an executor (encoding, sampler, bar) tasks and stores
each row as soon as it comes back; adding a Ray or process-pool executor touches nothing else."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from engine.space import Encoding

Task = tuple[Encoding, str, float | None]  # (encoding, sampler name, promotion bar)
EvaluateFn = Callable[[Encoding, str, float | None], dict]


class Executor(Protocol):
    slots: int  # tasks worth proposing at once (1: propose after every result)

    def map(self, evaluate: EvaluateFn, tasks: Sequence[Task]) -> Iterator[dict]:
        """Evaluate tasks, yielding each row as soon as it is ready (any order)."""
        ...


class InProcessExecutor:
    """The default: one evaluation at a time in this process, using torch's own threads."""

    slots = 1

    def map(self, evaluate: EvaluateFn, tasks: Sequence[Task]) -> Iterator[dict]:
        for task in tasks:
            yield evaluate(*task)
