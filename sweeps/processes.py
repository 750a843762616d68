"""The processes of one sweep, as Hugging Face Accelerate launched them.

`accelerate launch --multi_gpu --num_processes N cli.py grid ...` starts N copies of the
CLI (through torch.distributed.run); `python cli.py grid ...` is one. Accelerate's
PartialState tells each copy its rank, the process count and its device, and sets up the
process group its collectives use (NCCL between GPUs, gloo between CPU processes). On a
machine without CUDA (or with --device cpu) the state is made with cpu=True, which is what
makes Accelerate treat N launched processes as one multi-CPU group; a plain run is a group of
one, where every collective below returns its input.
"""

from __future__ import annotations

from typing import Any

import torch


class Processes:
    """This process's place in the sweep: index, count, device, and the three collectives."""

    def __init__(self, device: str | None = None) -> None:
        from accelerate import PartialState

        cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
        self.state = PartialState(cpu=cpu)
        self.index = self.state.process_index
        self.count = self.state.num_processes
        own = self.state.device
        # One process keeps the device asked for; launched ones each take the one Accelerate gave.
        self.device = device if self.count == 1 and device else ("cpu" if own.type == "cpu" else str(own))

    @property
    def is_main(self) -> bool:
        return self.index == 0

    def broadcast(self, value: Any) -> Any:
        """The main process's `value`, on every process."""
        if self.count == 1:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def gather(self, items: list[Any]) -> list[Any]:
        """Every process's `items`, concatenated in process order, on every process."""
        if self.count == 1:
            return list(items)
        from accelerate.utils import gather_object

        return gather_object(list(items))

    def wait(self) -> None:
        """Return once every process has got here."""
        self.state.wait_for_everyone()

    def close(self) -> None:
        """End the process group (after the last collective). Without this, gloo's worker threads
        can outlive the interpreter's teardown and abort the process ("terminate called without
        an active exception", exit -6) after all its work is done."""
        if self.count > 1:
            self.state.destroy_process_group()
