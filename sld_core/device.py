"""Which torch device and dtype the runtime uses: ``--device cpu|cuda|mps|auto`` resolved once, here."""
import torch

from .errors import InvalidInputError

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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


def precision_dtype(precision, device):
    """The models' dtype for a ``--precision`` name: "auto" is `default_dtype` (float32 on the CPU, even
    where the CPU has bf16 units: opt in with "bf16", whose image differs slightly)."""
    if precision not in PRECISIONS:
        raise InvalidInputError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    return default_dtype(device) if precision == "auto" else _PRECISION_DTYPES[precision]


def cpu_has_fast_bf16():
    """Whether this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX): without it, bf16
    runs far slower than float32 (bench/RESULTS.md), so a bf16 request deserves a warning."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    check = getattr(mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check and check())
