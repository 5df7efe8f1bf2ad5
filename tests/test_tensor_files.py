"""`tensor_files`: checkpoint tensors as zero-copy views of a copy-on-write file map, converted one by one."""
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_sld.sld_core.errors import CheckpointError
from comfyui_sld.sld_core.models.tensor_files import is_mapped, materialize, read_safetensors


def _resident_bytes(tensor):
    """Bytes of ``tensor``'s pages now in this process's memory (mincore via /proc/self/pagemap is
    root-only; smaps' Rss of the mapping that holds the tensor is what the kernel counts)."""
    address = tensor.data_ptr()
    with open("/proc/self/smaps") as smaps:
        inside = False
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:
                low, high = (int(x, 16) for x in fields[0].split("-"))
                inside = low <= address < high
            elif inside and fields[0] == "Rss:":
                return int(fields[1]) * 1024
    raise AssertionError("no mapping holds the tensor")


@pytest.fixture
def tensors(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {"a": torch.randn(4, 3, 1, 1, generator=g).half(), "b": torch.arange(6, dtype=torch.int64),
               "c": torch.randn(2, 5, generator=g).bfloat16(), "empty": torch.zeros(0, 3),
               "big": torch.randn(512, 1024, generator=g)}
    file = tmp_path / "t.safetensors"
    save_file(tensors, str(file))
    return file, tensors


def test_tensors_equal_what_safetensors_reads_and_share_the_files_pages(tensors):
    file, _ = tensors
    mapped = read_safetensors(file)
    expected = load_file(str(file))
    assert mapped.keys() == expected.keys()
    for key, tensor in expected.items():
        assert mapped[key].dtype == tensor.dtype and torch.equal(mapped[key], tensor), key
        assert is_mapped(mapped[key]), key
    assert not is_mapped(expected["big"])  # safetensors' own load is a copy: the check can tell


def test_a_tensor_already_right_is_not_copied_and_a_converted_one_gives_its_pages_back(tensors):
    file, original = tensors
    mapped = read_safetensors(file)
    big = mapped["big"]
    same = materialize(big, "cpu", torch.float32)
    assert same is big and same.data_ptr() == big.data_ptr()  # zero-copy: the weight is the map
    assert torch.equal(same, original["big"])
    assert _resident_bytes(big) >= big.nbytes - 2 * os.sysconf("SC_PAGE_SIZE")  # equal() touched every page
    half = materialize(big, "cpu", torch.float16)
    assert half.dtype == torch.float16 and torch.equal(half, original["big"].half())
    assert _resident_bytes(big) <= 2 * os.sysconf("SC_PAGE_SIZE")  # only the partial pages at its ends stay
    assert torch.equal(big, original["big"])  # a dropped page reads back from the file unchanged
    assert materialize(mapped["b"], "cpu", torch.float16).dtype == torch.int64  # integers keep their dtype


def test_writing_a_mapped_weight_never_changes_the_file(tensors):
    file, original = tensors
    before = file.read_bytes()
    mapped = read_safetensors(file)
    mapped["big"].add_(1.0)  # in place, as a merged LoRA would
    assert torch.equal(mapped["big"], original["big"] + 1.0)
    assert file.read_bytes() == before
    assert torch.equal(read_safetensors(file)["big"], original["big"])


def test_a_misaligned_tensor_is_copied_into_aligned_memory(tmp_path):
    # A header whose length is not a multiple of 4 puts a float32 tensor at an odd byte offset.
    import json
    import struct

    values = torch.arange(5, dtype=torch.float32)
    header = json.dumps({"x": {"dtype": "F32", "shape": [5], "data_offsets": [0, 20]}}).encode()
    header += b" " * (1 if (8 + len(header)) % 4 == 0 else 0)
    assert (8 + len(header)) % 4
    file = tmp_path / "odd.safetensors"
    file.write_bytes(struct.pack("<Q", len(header)) + header + values.numpy().tobytes())
    assert torch.equal(read_safetensors(file)["x"], values)


def test_an_unreadable_file_is_a_checkpoint_error(tensors):
    file, _ = tensors
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="not a readable .safetensors file"):
        read_safetensors(file)
