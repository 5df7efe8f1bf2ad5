"""`Vae`: SD1.x's AutoencoderKL between ComfyUI's IMAGE and LATENT layouts.

IMAGE is ``[B, H, W, 3]`` float32 in 0..1 on the CPU; LATENT samples are the VAE's *unscaled* latents
``[B, 4, H/8, W/8]`` (the model applies the 0.18215 factor). Encoding takes the posterior's mean, not a
sample, and crops the image to multiples of 8 (the VAE's downscale) around its centre, as ComfyUI's VAEEncode does.
"""
import torch

from ..errors import InvalidInputError


class Vae:
    """diffusers ``AutoencoderKL`` wrapped with ComfyUI's VAE conventions (headless ``VAE``)."""

    # Where it was loaded from (`checkpoint.load_checkpoint` sets them), for errors that name it.
    checkpoint = None  # the file or folder name
    family = None  # families.FAMILIES key

    def __init__(self, autoencoder):
        self.autoencoder = autoencoder

    @property
    def device(self):
        return next(self.autoencoder.parameters()).device

    @property
    def dtype(self):
        return next(self.autoencoder.parameters()).dtype

    @property
    def latent_channels(self):
        return self.autoencoder.config.latent_channels

    @property
    def downscale(self):
        """Pixels per latent cell along each side: 8 for SD1.x (one halving per level but the last)."""
        return 2 ** (len(self.autoencoder.config.block_out_channels) - 1)

    def decode(self, latent):
        """IMAGE ``[B, H, W, 3]`` in 0..1 (float32, CPU) from unscaled latents ``[B, C, h, w]``."""
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise InvalidInputError(
                f"VAE decode expects latents of shape [B, {self.latent_channels}, h, w], got {list(latent.shape)}"
            )
        with torch.no_grad():
            image = self.autoencoder.decode(latent.to(self.device, self.dtype)).sample
        return ((image.float() + 1.0) / 2.0).clamp(0.0, 1.0).movedim(1, -1).cpu()

    def encode(self, image):
        """Unscaled latents ``[B, C, H/8, W/8]`` (float32, CPU): the posterior mean of the centre crop
        of IMAGE ``[B, H, W, ≥3]`` to multiples of `downscale` (8). Channels past the third (alpha) are ignored."""
        if image.ndim != 4 or image.shape[-1] < 3:
            raise InvalidInputError(f"VAE encode expects an IMAGE of shape [B, H, W, 3], got {list(image.shape)}")
        image = crop_to_multiple(image[..., :3], self.downscale)
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise InvalidInputError(f"VAE encode needs an image at least {self.downscale}x{self.downscale} pixels")
        pixels = (image.movedim(-1, 1) * 2.0 - 1.0).to(self.device, self.dtype)
        with torch.no_grad():
            posterior = self.autoencoder.encode(pixels).latent_dist
        return posterior.mean.float().cpu()


def crop_to_multiple(image, multiple):
    """Crop IMAGE ``[B, H, W, C]`` to H, W multiples of ``multiple``, dropping the remainder evenly
    (the extra pixel of an odd remainder comes off the bottom/right)."""
    for dim in (1, 2):
        size = image.shape[dim]
        keep = size // multiple * multiple
        if keep != size:
            image = image.narrow(dim, (size - keep) // 2, keep)
    return image
