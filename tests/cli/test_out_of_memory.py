"""Running out of memory ends a command with one sentence, not the allocator's traceback: the device, where
(the step, or the evaluation, and the batch's shape), how much was asked, and the options that lower memory
for that loop (training or evaluation). Quickstart runs in-process (tiny model, debug preset); the model's
forward raises the allocator's error at a chosen call: CUDA's message as torch words it, and a real failed
allocation of the CPU allocator.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from neobert_tasks.model import NeoBERTForSequenceClassification
from neobert_tasks.out_of_memory import allocation_facts, memory_fault
from tests.cli.helpers import build_cli, command_error, quickstart_args

pytestmark = pytest.mark.slow  # runs the command line end to end

# How torch's CUDA caching allocator words it (c10/cuda/CUDACachingAllocator.cpp).
CUDA_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB of which"
    " 1.20 GiB is free. Including non-PyTorch memory, this process has 77.98 GiB memory in use. Of the"
    " allocated memory 76.50 GiB is allocated by PyTorch, and 1.00 GiB is reserved by PyTorch but"
    " unallocated."
)


def cuda_out_of_memory() -> None:
    raise torch.OutOfMemoryError(CUDA_MESSAGE)


def cpu_out_of_memory() -> None:
    torch.empty(2**50)  # 4 PiB: the CPU allocator refuses it


def fail_forward(monkeypatch, training: bool, at_call: int, fail) -> None:
    """The classifier's forward calls ``fail`` at its ``at_call``-th call (from 0) in train or eval mode."""
    forward, calls = NeoBERTForSequenceClassification.forward, itertools.count()

    def failing_forward(self, *args, **kwargs):
        if self.training == training and next(calls) == at_call:
            fail()
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(NeoBERTForSequenceClassification, "forward", failing_forward)


def test_a_training_step_out_of_gpu_memory_names_the_step_batch_and_options(monkeypatch, capsys, tmp_path):
    fail_forward(monkeypatch, training=True, at_call=3, fail=cuda_out_of_memory)
    message = command_error(capsys, "fit", *quickstart_args(tmp_path), tmp_path=tmp_path)
    assert message.startswith("Ran out of GPU memory at training step 3 (epoch 0) on a batch of 32 × ")
    assert (
        "tokens (tried to allocate 2.00 GiB; 79.19 GiB in all, 1.20 GiB free): lower data.init_args"
        in message
    )
    assert message.endswith(
        ".batch_size (raising trainer.accumulate_grad_batches keeps the batch the optimizer sees), or cap a"
        " batch's tokens with data.init_args.max_tokens, shorten data.init_args.max_length, set"
        " model.init_args.gradient_checkpointing true or train in bf16 (--config configs/presets/bf16.yaml)."
    )


def test_options_already_set_are_not_suggested(monkeypatch, capsys, tmp_path):
    fail_forward(monkeypatch, training=True, at_call=0, fail=cuda_out_of_memory)
    arguments = ["--data.init_args.max_tokens", "512", "--model.init_args.gradient_checkpointing", "true"]
    message = command_error(capsys, "fit", *quickstart_args(tmp_path), *arguments, tmp_path=tmp_path)
    assert message.startswith("Ran out of GPU memory at training step 0 (epoch 0) on a batch of ")
    assert message.endswith(
        ": lower data.init_args.max_tokens, shorten data.init_args.max_length or train in bf16"
        " (--config configs/presets/bf16.yaml)."
    )


def test_the_validation_of_a_fit_out_of_cpu_memory_points_to_the_evaluation_batch(
    monkeypatch, capsys, tmp_path
):
    """A real refusal of the CPU allocator, in the validation at the end of the epoch (step 8)."""
    arguments = ["--trainer.num_sanity_val_steps", "0"]
    fail_forward(monkeypatch, training=False, at_call=0, fail=cpu_out_of_memory)
    message = command_error(capsys, "fit", *quickstart_args(tmp_path), *arguments, tmp_path=tmp_path)
    assert message.startswith("Ran out of CPU memory in the validation after step 8 on a batch of 32 × ")
    assert message.endswith(
        " tokens (tried to allocate 4194304.00 GiB): lower data.init_args.eval_batch_size or shorten"
        " data.init_args.max_length."
    )


def test_predict_out_of_memory(monkeypatch, capsys, tmp_path):
    build_cli("fit", *quickstart_args(tmp_path))
    config = tmp_path / "runs" / "version_0" / "config.yaml"
    fail_forward(monkeypatch, training=False, at_call=1, fail=cuda_out_of_memory)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        build_cli("predict", "--config", config, "--ckpt_path", "best")
    assert exit_info.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("neobert_tasks: error: Ran out of GPU memory while predicting on a batch of ")
    assert message.endswith("lower data.init_args.eval_batch_size or shorten data.init_args.max_length.")


def test_the_allocators_messages_are_recognised():
    """The CPU allocator's real message, and CUDA's as worded above, with the sizes they give."""
    with pytest.raises(RuntimeError) as raised:
        cpu_out_of_memory()
    assert memory_fault(raised.value) is raised.value
    assert allocation_facts(raised.value) == "tried to allocate 4194304.00 GiB"
    wrapped = RuntimeError("the step failed")
    wrapped.__cause__ = torch.OutOfMemoryError(CUDA_MESSAGE)
    assert memory_fault(wrapped) is wrapped.__cause__
    assert (
        allocation_facts(wrapped.__cause__) == "tried to allocate 2.00 GiB; 79.19 GiB in all, 1.20 GiB free"
    )
    assert memory_fault(RuntimeError("shape mismatch")) is None
