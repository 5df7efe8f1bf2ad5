"""Checkpoint tensors straight from their files: ``.safetensors`` memory-mapped, ``.ckpt``/``.pt`` weights-only.

A ``.safetensors`` file is mapped copy-on-write (``mmap.ACCESS_COPY``, i.e. ``MAP_PRIVATE``) and every
tensor is a view of the mapped bytes (``torch.frombuffer``): reading a checkpoint costs nothing until a
page is first touched, and a tensor that already has the dtype and device the model runs in *is* the
model's weight, with no copy. Copy-on-write keeps the file safe from a weight changed in place.

A tensor that must change (another dtype, another device) is converted by `materialize`, which then
hands the source's pages back to the kernel (``madvise(MADV_DONTNEED)``), so that converting a whole
file keeps about one model resident, not the file plus the model. That is why the map is our own
``mmap`` object rather than safetensors' ``safe_open`` views (the same copy-on-write map inside, but no
handle to give pages back through); safetensors still validates every file before it is mapped.
"""
import json
import mmap
import pickle
import struct
import weakref

import torch

from ..errors import CheckpointError

_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
_PAGE = mmap.PAGESIZE
# Maps made by `read_safetensors`, by the address of their first byte; an entry goes when the last
# tensor viewing that map does.
_MAPS = weakref.WeakValueDictionary()


def read_safetensors(path):
    """A .safetensors file's tensors as zero-copy views of a copy-on-write map of the file.

    `CheckpointError` if safetensors finds the file unreadable (bad header, offsets past its end) or
    it holds a dtype torch cannot view.
    """
    keys = _validated_keys(path)
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        header = json.loads(file.read(length))
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)
    data = torch.frombuffer(mapped, dtype=torch.uint8)
    _MAPS[data.data_ptr()] = mapped
    start = 8 + length
    tensors = {}
    for key in keys:
        entry = header[key]
        dtype = _dtype(path, key, entry)
        begin, end = entry["data_offsets"]
        raw = data[start + begin:start + end]
        if (start + begin) % dtype.itemsize:  # a writer that did not align its tensors: copy this one
            raw = raw.clone()
        tensors[key] = raw.view(dtype).reshape(entry["shape"])
    return tensors


def materialize(tensor, device, dtype=None):
    """``tensor`` on ``device`` in ``dtype`` (floating-point tensors only; others keep theirs).

    Already right: returned as it is (for a mapped tensor, the file's pages themselves). Otherwise the
    converted copy, after the pages of a mapped source have been given back to the kernel.
    """
    dtype = dtype if tensor.is_floating_point() and dtype is not None else tensor.dtype
    converted = tensor.to(device=device, dtype=dtype)
    if converted is not tensor:
        _release(tensor)
    return converted


def is_mapped(tensor):
    """Whether ``tensor`` views a file mapped by `read_safetensors` (shares its pages: zero-copy)."""
    return _map_of(tensor) is not None


def _map_of(tensor):
    """The map made by `read_safetensors` that ``tensor`` views, else None."""
    return _MAPS.get(tensor.untyped_storage().data_ptr()) if tensor.device.type == "cpu" else None


def _release(tensor):
    """Drop a mapped tensor's whole pages from this process (they were only read, so the data stays on
    disk and in the page cache; a later read faults the same bytes back in)."""
    mapped = _map_of(tensor)
    if mapped is None or not tensor.is_contiguous():
        return
    begin = tensor.data_ptr() - tensor.untyped_storage().data_ptr()
    first, last = -(-begin // _PAGE) * _PAGE, (begin + tensor.nbytes) // _PAGE * _PAGE  # pages wholly inside
    if last > first:
        mapped.madvise(mmap.MADV_DONTNEED, first, last - first)


def _validated_keys(path):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return list(f.keys())
    except (SafetensorError, OSError, RuntimeError, ValueError) as err:
        raise CheckpointError(path, f"is not a readable .safetensors file (corrupt or truncated?): {err}") from None


def _dtype(path, key, entry):
    if entry["dtype"] not in _SAFETENSORS_DTYPES:
        raise CheckpointError(path, f"tensor {key!r} has dtype {entry['dtype']}, which Stable Diffusion checkpoints do not use")
    return _SAFETENSORS_DTYPES[entry["dtype"]]


def read_weights_only_pickle(path):
    """The tensors of a .ckpt/.pt file, unpickled weights-only: a pickle holding objects is refused unrun.

    Read into memory (no map): converting them would otherwise keep the file's pages resident beside
    the model, and this legacy format is the rare case.
    """
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # The weights-only unpickler names the class or function it would have had to import.
        if "global" in str(err).lower():
            raise CheckpointError(
                path, "refused to load: the file holds Python objects besides tensors, and .ckpt/.pt files are "
                "only read weights-only (convert it to .safetensors from a source you trust)"
            ) from None
        raise CheckpointError(path, "is not a readable PyTorch checkpoint (corrupt or truncated?)") from None
    except Exception as err:  # torch.load raises many types for damaged files (RuntimeError, EOFError, ...)
        raise CheckpointError(path, f"is not a readable PyTorch checkpoint (corrupt or truncated?): {err}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(path, f"holds a {type(state).__name__}, not a state dict of tensors")
    return {k: v for k, v in state.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
