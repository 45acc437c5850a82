"""A full or read-only disk, wherever it refuses a write, ends in one sentence that names the file or folder
(cli.main turns a `StorageError`, or any error `storage_fault` finds a storage errno in, into that line)."""

from __future__ import annotations

import errno

import datasets
import pytest

from neobert_tasks.data.sources import check_cache_writable
from neobert_tasks.errors import StorageError, storage_fault
from neobert_tasks.prediction_writer import write_prediction_file


def test_the_rust_libraries_full_disk_is_a_storage_fault():
    # tokenizers raises a plain Exception, safetensors its SafetensorError: neither is an OSError.
    fault = storage_fault(Exception("No space left on device (os error 28)"))
    assert fault is not None and fault.errno == errno.ENOSPC
    assert storage_fault(Exception("Second sequence not provided")) is None
    assert storage_fault(Exception("Not found (os error 2)")) is None  # not the disk refusing a write


def test_a_prediction_file_that_cannot_be_written_names_itself(tmp_path):
    def lines():
        yield "a line\n"
        raise OSError(errno.ENOSPC, "No space left on device")  # a stream's write names no file

    with pytest.raises(OSError) as raised:
        write_prediction_file(tmp_path / "predict.jsonl", lines())
    assert raised.value.filename == str(tmp_path / "predict.jsonl") and raised.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_full_datasets_cache_is_not_reported_as_unreadable_data(tmp_path):
    generation_error = datasets.exceptions.DatasetGenerationError("An error occurred")
    generation_error.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(StorageError, match=rf"datasets cache in '{tmp_path}' \(no space left on device"):
        check_cache_writable(generation_error, str(tmp_path))
    check_cache_writable(PermissionError(errno.EACCES, "Permission denied"), str(tmp_path))  # the data's
