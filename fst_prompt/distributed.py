"""Several processes (`torchrun`, `accelerate launch`): every process trains; the main one alone runs the
fast step (the reflection LM and the GEPA round), the evaluations and every write to the run directory, and
shares what the others need (the run state, the population) with them.

The others wait in a collective while the main one works, so the process group's timeout is
`loop.wait_minutes` (a GEPA round can take an hour on CPU), not torch's default of 10-30 minutes. With
one process (no launcher) nothing here communicates.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from trl import GRPOTrainer

T = TypeVar("T")


def launched_processes() -> int:
    """How many processes the launcher started (1 without one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Processes:
    """This process's place in the job, and the few collectives the loop needs."""

    def __init__(self, wait_minutes: int = 480) -> None:
        self.count = launched_processes()
        self.index = int(os.environ.get("RANK", "0"))
        self.state = None
        if self.count > 1:
            import torch
            from accelerate import PartialState

            # First to initialise the process group (the trainer's Accelerator reuses it), with our timeout
            self.state = PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(minutes=wait_minutes))
            self.count, self.index = self.state.num_processes, self.state.process_index

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, error_type: type[BaseException] | None, *_: Any) -> None:
        """Tear the process group down while the interpreter is whole: left to interpreter shutdown, gloo's
        worker threads can abort a process (`terminate called without an active exception`) after the run
        has finished, and the launcher reports a failure. After a success every process waits for the others
        first (none leaves while another still talks to it); after an error it leaves at once."""
        import torch.distributed as dist

        if self.state is not None and dist.is_initialized():
            if error_type is None:
                dist.barrier()
            dist.destroy_process_group()

    @property
    def main(self) -> bool:
        return self.index == 0

    def share(self, value: T) -> T:
        """The main process's `value`, on every process."""
        if self.count == 1:
            return value
        from accelerate.utils import broadcast_object_list

        box = [value if self.main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def sum(self, value: int) -> int:
        """The sum of every process's `value`, on every process."""
        if self.count == 1:
            return value
        from accelerate.utils import gather_object

        return sum(gather_object([value]))

    def on_main(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the main process, its result on every process; if it raises, every process raises
        the same exception (none is left waiting for a result that never comes)."""
        return self._run(fn, args, share_result=True)

    def only_main(self, fn: Callable[..., T], *args: Any) -> T | None:
        """`fn(*args)` on the main process (its result there, None elsewhere), for results that cannot travel
        (an open server); if it raises, every process raises the same exception."""
        return self._run(fn, args, share_result=False)

    def _run(self, fn: Callable[..., T], args: tuple, share_result: bool) -> Any:
        outcome: Any = None
        if self.main:
            try:
                outcome = (True, fn(*args))
            except Exception as e:  # noqa: BLE001 - re-raised below, on every process
                outcome = (False, e)
        if self.count == 1:
            shared = outcome
        else:
            shared = self.share(outcome if share_result or not self.main or not outcome[0] else (True, None))
        ok, value = shared
        if not ok:
            raise value
        return outcome[1] if self.main else value


@contextlib.contextmanager
def generating(trainer: GRPOTrainer | None) -> Iterator[None]:
    """Around the main process's own generation (GEPA round, evaluation, KL probe) with a trainer's model:
    TRL's `unwrap_model_for_generation`, which every process enters (under DeepSpeed ZeRO-3 it gathers the
    sharded weights, a collective); without a trainer, nothing."""
    if trainer is None:
        yield
        return
    from trl.models import unwrap_model_for_generation

    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator):
        yield
