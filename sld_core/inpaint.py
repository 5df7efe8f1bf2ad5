"""Inpainting as ComfyUI does it: a LATENT's ``noise_mask`` inside the sampler, and the pixel side of
``VAEEncodeForInpaint``.

Mask convention (ComfyUI's MASK): 1 = repaint, 0 = keep. In the sampler the mask is resized to the
latent and, at every model evaluation, the kept region of the model's input is replaced by the
original latent noised to the current σ, and the kept region of its output (the denoised estimate)
by the original latent itself. The sampler therefore ends, for samplers whose last step returns the
denoised estimate, on the original latent outside the mask; there is no separate final blend.
"""
import math

import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .latent_batch import repeat_to_batch


def as_mask_batch(mask, name="noise_mask"):
    """A MASK ([H, W], [B, H, W] or [B, 1, H, W]) as [B, 1, H, W] float32."""
    if not torch.is_tensor(mask) or mask.ndim < 2 or 0 in mask.shape:
        raise InvalidInputError(f"{name}: expected a MASK tensor [B, H, W], got {getattr(mask, 'shape', type(mask).__name__)}")
    return mask.reshape(-1, 1, *mask.shape[-2:]).float()


def latent_mask(mask, shape):
    """The mask for latents of ``shape`` [B, C, h, w]: bilinearly resized to h × w, repeated over the
    channels and cut or tiled to the batch."""
    mask = F.interpolate(as_mask_batch(mask), size=tuple(shape[2:]), mode="bilinear")
    mask = mask.repeat(1, shape[1], 1, 1)[:, :shape[1]]
    return repeat_to_batch(mask, shape[0])


class MaskedDenoiser:
    """A denoiser that repaints only where ``mask`` is 1 (ComfyUI's KSamplerX0Inpaint).

    ``latent`` is the original in the model's (scaled) space, ``noise`` the unit noise the kept
    region is re-noised with (x = latent + σ·noise); both shaped like the sampled x.
    """

    def __init__(self, denoiser, mask, latent, noise):
        self.denoiser, self.mask, self.latent, self.noise = denoiser, mask, latent, noise

    def __call__(self, x, sigma, **extra_args):
        keep = 1.0 - self.mask
        sigma_b = sigma.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        x = x * self.mask + (self.latent + self.noise * sigma_b) * keep
        denoised = self.denoiser(x, sigma, **extra_args)
        return denoised * self.mask + self.latent * keep


def grow_mask(mask, grow_by):
    """Binary mask ([B, 1, H, W], rounded) grown by a ``grow_by`` × ``grow_by`` window: a pixel is set
    where any set pixel lies in the window reaching ceil((grow_by − 1)/2) up/left of it (for an even
    size it reaches one pixel less down/right); the result has the input's size."""
    binary = mask.round()
    if grow_by == 0:
        return binary
    pad = math.ceil((grow_by - 1) / 2)
    kernel = torch.ones((1, 1, grow_by, grow_by), dtype=binary.dtype, device=binary.device)
    grown = F.conv2d(binary, kernel, padding=pad).clamp(0, 1)
    return grown[:, :, :mask.shape[2], :mask.shape[3]]


def inpaint_pixels(pixels, mask, downscale, grow_by):
    """The pixel side of VAEEncodeForInpaint: (pixels to encode, noise mask at pixel resolution).

    The mask is resized to the image, image and mask are cropped to multiples of ``downscale`` around
    the centre, masked pixels (mask ≥ 0.5) are set to grey 0.5 so that nothing of what is under the
    hole leaks into the latent, and the noise mask is the rounded mask grown by ``grow_by`` pixels.
    """
    height, width = pixels.shape[1:3]
    mask = F.interpolate(as_mask_batch(mask, "mask"), size=(height, width), mode="bilinear")
    keep_h, keep_w = height // downscale * downscale, width // downscale * downscale
    top, left = (height % downscale) // 2, (width % downscale) // 2
    pixels = pixels[:, top:top + keep_h, left:left + keep_w].clone()
    mask = mask[:, :, top:top + keep_h, left:left + keep_w]
    keep = (1.0 - mask.round()).squeeze(1)
    for channel in range(3):
        pixels[..., channel] = (pixels[..., channel] - 0.5) * keep + 0.5
    return pixels, grow_mask(mask, grow_by)
