"""Running out of memory: one sentence saying where, how much, and which options to change.

The allocator's own message (``torch.OutOfMemoryError`` on CUDA, a ``RuntimeError`` from the CPU or MPS
allocator) comes at the end of a traceback through Lightning, autograd and compiled code, and says nothing
about the run: which step, which batch, which setting to lower. `MemoryFaultPosition` records where each
loop is (the shape of the batch it is on, at the cost of a tuple per step) and, when a loop fails for want
of memory, what it was doing; `describe_memory_fault` turns that into the message the command line prints
instead of the traceback.
"""

from __future__ import annotations

import re
from typing import Any

import lightning as L
import torch

from neobert_tasks.errors import error_chain

# Substrings of the allocators' messages: CUDA and MPS ("out of memory"), the CPU's DefaultCPUAllocator.
OUT_OF_MEMORY_MESSAGES = ("out of memory", "can't allocate memory")
_SIZE = r"[\d.]+ [KMGTP]?i?B"
_position: dict[str, Any] = {}


def memory_fault(error: BaseException | None) -> RuntimeError | None:
    """The allocator's error that ``error`` is, was raised from, or was raised while handling; else None."""
    for link in error_chain(error, context=True):
        if isinstance(link, torch.OutOfMemoryError):
            return link
        if isinstance(link, RuntimeError) and any(text in str(link) for text in OUT_OF_MEMORY_MESSAGES):
            return link
    return None


class MemoryFaultPosition(L.Callback):
    """Remember the batch each loop is on; when one runs out of memory, record where, for the message."""

    def __init__(self):
        self.batch_shape: tuple[int, ...] | None = None
        _position.clear()  # one command's record: an earlier command of this process (tests) does not count

    def _remember(self, batch: Any) -> None:
        input_ids = batch.get("input_ids") if isinstance(batch, dict) else None
        self.batch_shape = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._remember(batch)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._remember(batch)

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._remember(batch)

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._remember(batch)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        if memory_fault(exception) is None:
            return
        where = loop_position(trainer)
        if self.batch_shape is not None and len(self.batch_shape) == 2:
            where += f" on a batch of {self.batch_shape[0]} × {self.batch_shape[1]} tokens"
        _position.update(
            where=where,
            training=trainer.training and not trainer.sanity_checking,
            half_precision="16" in str(trainer.precision),  # bf16 or fp16: activations already halved
            checkpointing=bool(getattr(pl_module, "hparams", {}).get("gradient_checkpointing")),
            max_tokens=getattr(trainer.datamodule, "max_tokens", None) is not None,
        )


def loop_position(trainer: L.Trainer) -> str:
    """``at training step 12 (epoch 0)``, ``in the validation after step 500``, ``while predicting``."""
    if trainer.sanity_checking:
        return "in the validation sanity check, before the first step"
    if trainer.training:
        return f"at training step {trainer.global_step} (epoch {trainer.current_epoch})"
    if trainer.state.fn == "fit":
        return f"in the validation after step {trainer.global_step}"
    verb = {"validate": "validating", "test": "testing", "predict": "predicting"}
    return f"while {verb.get(str(trainer.state.fn.value), trainer.state.fn.value)}"


def allocation_facts(fault: RuntimeError) -> str:
    """What the allocator said it lacked: ``tried to allocate 2.00 GiB; 79.19 GiB in all, 1.20 GiB free``."""
    text = str(fault)
    facts = []
    if wanted := re.search(rf"[Tt]ried to allocate ({_SIZE})", text):
        facts.append(f"tried to allocate {wanted.group(1)}")
    elif wanted := re.search(r"tried to allocate (\d+) bytes", text):
        facts.append(f"tried to allocate {int(wanted.group(1)) / 2**30:.2f} GiB")
    if total := re.search(rf"total capacity of ({_SIZE})", text):
        free = re.search(rf"of which ({_SIZE}) is free", text)
        facts.append(f"{total.group(1)} in all" + (f", {free.group(1)} free" if free else ""))
    return "; ".join(facts)


def describe_memory_fault(fault: RuntimeError) -> str:
    """The sentence the command line prints: device, position, sizes, and the options that lower memory."""
    text = str(fault)
    device = "CPU" if "CPUAllocator" in text else "MPS" if "MPS" in text else "GPU"
    where = _position.get("where")
    facts = allocation_facts(fault)
    head = f"Ran out of {device} memory" + (f" {where}" if where else "") + (f" ({facts})" if facts else "")
    if where and not _position.get("training"):
        changes = ["lower data.init_args.eval_batch_size", "shorten data.init_args.max_length"]
    else:
        changes = [
            "lower data.init_args.max_tokens"
            if _position.get("max_tokens")
            else "lower data.init_args.batch_size (raising trainer.accumulate_grad_batches keeps the batch "
            "the optimizer sees), or cap a batch's tokens with data.init_args.max_tokens",
            "shorten data.init_args.max_length",
        ]
        if not _position.get("checkpointing"):
            changes.append("set model.init_args.gradient_checkpointing true")
        if not _position.get("half_precision") and device == "GPU":
            changes.append("train in bf16 (--config configs/presets/bf16.yaml)")
    return f"{head}: {', '.join(changes[:-1])} or {changes[-1]}."
