"""Which torch device and dtype the runtime uses: ``--device cpu|cuda|mps|auto`` resolved once, here."""
import torch

from .errors import InvalidInputError

DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available():
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name="auto"):
    """A ``torch.device`` for "auto" (CUDA, else MPS, else CPU), "cpu", "cuda" or "mps".

    Asking for an accelerator that is not there is an error, never a silent fall-back to the CPU.
    """
    if isinstance(name, torch.device):
        name = name.type if name.index is None else str(name)
    kind = str(name).split(":")[0]
    if kind not in DEVICES:
        raise InvalidInputError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {name!r} was asked for but CUDA is not available (torch {torch.__version__})")
    if kind == "mps" and not _mps_available():
        raise InvalidInputError(f"device {name!r} was asked for but Apple MPS is not available")
    return torch.device(name)


def default_dtype(device):
    """float16 on CUDA (SD1.x's UNet and text encoder run fine in it); float32 on CPU and MPS."""
    return torch.float16 if torch.device(device).type == "cuda" else torch.float32


def vae_dtype(device, dtype):
    """The VAE's dtype given the models' dtype: SD1's VAE overflows in float16, so on CUDA it runs in
    bfloat16 where supported, else float32 (ComfyUI's choice too); other dtypes pass through."""
    if dtype != torch.float16:
        return dtype
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32
