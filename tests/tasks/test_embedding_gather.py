"""`gathered_in_order`: an evaluation set's embeddings, embedded in parts by several ranks, come back with
row ``i`` being text ``i``; in one process and under a real two-process gloo group, where the ranks hold
different numbers of texts.
"""

from __future__ import annotations

import os
import tempfile
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neobert_tasks.tasks.embedding import gathered_in_order

TEXTS = 5


def embedding_of(indices: list[int]) -> torch.Tensor:
    """A recognisable embedding per text: text i is the row (i, -i)."""
    return torch.tensor([[float(i), -float(i)] for i in indices])


def parts_of(batches: list[list[int]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.tensor(batch), embedding_of(batch)) for batch in batches]


def test_one_process_orders_rows_and_refuses_an_incomplete_set():
    ordered = gathered_in_order(parts_of([[3, 0], [4, 1, 2]]), TEXTS)
    torch.testing.assert_close(ordered, embedding_of(list(range(TEXTS))))
    assert gathered_in_order(parts_of([[3, 0], [4, 1]]), TEXTS) is None  # text 2 missing
    assert gathered_in_order(parts_of([[3, 0, 0], [4, 1]]), TEXTS) is None  # text 0 twice, 2 missing


# Rank 0 embeds three texts in two batches, rank 1 two texts in one: different row counts per rank.
RANK_BATCHES = {0: [[4, 0], [2]], 1: [[3, 1]]}


def _rank_main(rank: int, init_file: str, result_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        ordered = gathered_in_order(parts_of(RANK_BATCHES[rank]), TEXTS)
        dist.barrier()
        torch.save(ordered, f"{result_file}.{rank}")
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)  # without destroying the group: see tests/tasks/test_contrastive_loss.py


@pytest.mark.slow
def test_two_gloo_ranks_gather_every_text_in_order():
    with tempfile.TemporaryDirectory() as directory:
        init_file, result_file = os.path.join(directory, "init"), os.path.join(directory, "result")
        mp.start_processes(_rank_main, args=(init_file, result_file), nprocs=2, start_method="spawn")
        results = [torch.load(f"{result_file}.{rank}") for rank in range(2)]
    for ordered in results:  # every rank gets the whole set
        torch.testing.assert_close(ordered, embedding_of(list(range(TEXTS))))
