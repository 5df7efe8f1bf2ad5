"""Resampling of latents and images as ComfyUI's upscale nodes do it (`LatentUpscale`, `ImageScale`, ...).

Everything works on channel-first batches ``[B, C, H, W]``. The plain methods are torch's
``interpolate`` in the mode of the same name (no ``align_corners``, no antialiasing, so a downscale
samples rather than averages, as in ComfyUI); ``bislerp`` interpolates latent vectors spherically;
``lanczos`` goes through 8-bit PIL images, as ComfyUI's does, so its output is quantised to /255.
"""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import InvalidInputError
from .resample_names import PLAIN_METHODS


def center_crop(samples, width, height):
    """The centred part of ``samples`` with the aspect ratio of width:height (the sides that stick out
    are cut evenly; the offset is rounded, as ComfyUI's crop="center")."""
    old_h, old_w = samples.shape[-2:]
    old_aspect, new_aspect = old_w / old_h, width / height
    x = y = 0
    if old_aspect > new_aspect:
        x = round((old_w - old_w * new_aspect / old_aspect) / 2)
    elif old_aspect < new_aspect:
        y = round((old_h - old_h * old_aspect / new_aspect) / 2)
    return samples[..., y:old_h - y, x:old_w - x]


def upscale(samples, width, height, method, crop="disabled"):
    """``samples`` [B, C, H, W] resized to height × width by ``method`` (one of LATENT_METHODS or
    IMAGE_METHODS), after a centre crop to the new aspect ratio when ``crop`` is "center"."""
    if width < 1 or height < 1:
        raise InvalidInputError(f"cannot resize to {width}x{height}: both sides must be at least 1")
    if crop == "center":
        samples = center_crop(samples, width, height)
    if method == "bislerp":
        return bislerp(samples, width, height)
    if method == "lanczos":
        return lanczos(samples, width, height)
    if method not in PLAIN_METHODS:
        raise InvalidInputError(f"unknown upscale_method {method!r}")
    return F.interpolate(samples, size=(height, width), mode=method)


def _source_positions(old, new, device):
    """For each of ``new`` output positions along one axis: the two neighbouring input indices and
    the weight of the second, by bilinear (half-pixel centre) mapping, clamped at the borders."""
    position = ((torch.arange(new, device=device, dtype=torch.float64) + 0.5) * (old / new) - 0.5).clamp(min=0)
    first = position.floor().long().clamp(max=old - 1)
    second = (first + 1).clamp(max=old - 1)
    return first, second, (position - first).float()


def slerp(a, b, t):
    """Spherical interpolation of the vectors in the last axis of ``a`` and ``b`` by ``t`` (same shape,
    last axis 1): the direction turns along the great circle, the length is interpolated linearly.
    Nearly parallel pairs give ``a``; nearly opposite ones the straight line a + t(b − a)."""
    norm_a, norm_b = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    unit_a = torch.where(norm_a == 0, torch.zeros_like(a), a / norm_a)
    unit_b = torch.where(norm_b == 0, torch.zeros_like(b), b / norm_b)
    dot = (unit_a * unit_b).sum(-1, keepdim=True)
    omega = torch.acos(dot)
    sin_omega = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / sin_omega) * unit_a + (torch.sin(t * omega) / sin_omega) * unit_b
    out = out * (norm_a * (1 - t) + norm_b * t)
    out = torch.where(dot < 1e-5 - 1, a * (1 - t) + b * t, out)
    return torch.where(dot > 1 - 1e-5, a, out)


def _bislerp_axis(samples, new, axis):
    first, second, t = _source_positions(samples.shape[axis], new, samples.device)
    a = samples.index_select(axis, first).movedim(1, -1)
    b = samples.index_select(axis, second).movedim(1, -1)
    shape = [1] * a.ndim
    shape[axis - 1] = new  # the resized axis, counted after the channels moved last
    return slerp(a, b, t.view(shape)).movedim(-1, 1)


def bislerp(samples, width, height):
    """Bilinear resize in which each interpolation between two latent vectors (across channels) is
    a `slerp`: first along the width, then along the height. Keeps latent vectors' lengths where a
    plain bilinear blend of two differing vectors shortens them."""
    dtype = samples.dtype
    out = _bislerp_axis(samples.float(), width, 3)
    return _bislerp_axis(out, height, 2).to(dtype)


def lanczos(samples, width, height):
    """Lanczos resize through 8-bit images (PIL's LANCZOS filter, antialiased when shrinking): values
    are clipped to 0..1 and quantised to /255, as ComfyUI's lanczos does. Needs 1, 3 or 4 channels."""
    if samples.shape[1] not in (1, 3, 4):
        raise InvalidInputError(f"lanczos resizes images of 1, 3 or 4 channels, got {samples.shape[1]}")
    out = []
    for image in samples:
        array = np.clip(255.0 * image.movedim(0, -1).float().cpu().numpy(), 0, 255).astype(np.uint8)
        resized = Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).resize(
            (width, height), resample=Image.Resampling.LANCZOS)
        values = torch.from_numpy(np.asarray(resized).astype(np.float32) / 255.0)
        out.append(values.unsqueeze(0) if values.ndim == 2 else values.movedim(-1, 0))
    return torch.stack(out).to(samples.device, samples.dtype)
