"""Latent nodes for headless mode, as ComfyUI's: `EmptyLatentImage`, `VAEEncode`, `VAEDecode`, the
upscale and batch nodes, and the inpainting ones (`SetLatentNoiseMask`, `VAEEncodeForInpaint`)."""
from ..sld_core.resample_names import CROP_METHODS, LATENT_METHODS
from .errors import NodeInputError

MAX_RESOLUTION = 16384  # ComfyUI's nodes.MAX_RESOLUTION

# Peak working memory of a run, per output pixel: the VAE decoder runs its last blocks at full
# resolution with 128 float32 channels, and keeps about two such tensors alive.
PEAK_BYTES_PER_PIXEL = 128 * 4 * 2


def estimated_peak_bytes(width, height, batch_size):
    """A lower bound on the memory a `width`×`height`×`batch_size` generation needs (VAE decode)."""
    return int(width) * int(height) * int(batch_size) * PEAK_BYTES_PER_PIXEL


class EmptyLatentImage:
    """ComfyUI's core empty latent (headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "width": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8, "tooltip": "The width of the latent images in pixels."}),
                "height": ("INT", {"default": 512, "min": 16, "max": MAX_RESOLUTION, "step": 8, "tooltip": "The height of the latent images in pixels."}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096, "tooltip": "The number of latent images in the batch."}),
            }
        }

    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("The empty latent image batch.",)
    FUNCTION = "generate"
    CATEGORY = "latent"
    DESCRIPTION = "Create a new batch of empty latent images to be denoised via sampling."

    def generate(self, width, height, batch_size=1):
        import torch

        return ({"samples": torch.zeros([batch_size, 4, height // 8, width // 8])},)


class VAEDecode:
    """ComfyUI's core VAE decode (headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "samples": ("LATENT", {"tooltip": "The latent to be decoded."}),
                "vae": ("VAE", {"tooltip": "The VAE model used for decoding the latent."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The decoded image.",)
    FUNCTION = "decode"
    CATEGORY = "latent"
    DESCRIPTION = "Decodes latent images back into pixel space images."

    def decode(self, vae, samples):
        return (vae.decode(samples["samples"]),)


class VAEEncode:
    """ComfyUI's core VAE encode (headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"pixels": ("IMAGE",), "vae": ("VAE",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent"

    def encode(self, vae, pixels):
        return ({"samples": vae.encode(pixels[:, :, :, :3])},)


def _upscaled(samples, width, height, upscale_method, crop, name):
    from ..sld_core.resample import upscale

    if width < 1 or height < 1:
        raise NodeInputError(name, f"the {samples.shape[-1]}x{samples.shape[-2]} latent would become {width}x{height}; "
                                   "each side must be at least 1")
    return upscale(samples, width, height, upscale_method, crop)


class LatentUpscale:
    """ComfyUI's core LatentUpscale (headless only): resize latents to a size in pixels."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT",),
            "upscale_method": (list(LATENT_METHODS),),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                              "tooltip": "Target width in pixels; 0 keeps the aspect ratio from the height."}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 8,
                               "tooltip": "Target height in pixels; 0 keeps the aspect ratio from the width."}),
            "crop": (list(CROP_METHODS),),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(self, samples, upscale_method, width, height, crop):
        from ..sld_core.latent_batch import check_samples

        latent = check_samples(samples)
        if width == 0 and height == 0:
            return (samples,)
        # ComfyUI's rules: a 0 side follows the aspect ratio, and no side goes below 64 pixels.
        if width == 0:
            height = max(64, height)
            width = max(64, round(latent.shape[-1] * height / latent.shape[-2]))
        elif height == 0:
            width = max(64, width)
            height = max(64, round(latent.shape[-2] * width / latent.shape[-1]))
        else:
            width, height = max(64, width), max(64, height)
        out = dict(samples)
        out["samples"] = _upscaled(latent, width // 8, height // 8, upscale_method, crop, "width")
        return (out,)


class LatentUpscaleBy:
    """ComfyUI's core LatentUpscaleBy (headless only): resize latents by a factor."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT",),
            "upscale_method": (list(LATENT_METHODS),),
            "scale_by": ("FLOAT", {"default": 1.5, "min": 0.01, "max": 8.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "upscale"
    CATEGORY = "latent"

    def upscale(self, samples, upscale_method, scale_by):
        from ..sld_core.latent_batch import check_samples

        latent = check_samples(samples)
        width, height = round(latent.shape[-1] * scale_by), round(latent.shape[-2] * scale_by)
        out = dict(samples)
        out["samples"] = _upscaled(latent, width, height, upscale_method, "disabled", "scale_by")
        return (out,)


class RepeatLatentBatch:
    """ComfyUI's core RepeatLatentBatch (headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "amount": ("INT", {"default": 1, "min": 1, "max": 64})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "repeat"
    CATEGORY = "latent/batch"

    def repeat(self, samples, amount):
        from ..sld_core.latent_batch import check_samples, repeat_latent

        check_samples(samples)
        return (repeat_latent(samples, amount),)


class LatentFromBatch:
    """ComfyUI's core LatentFromBatch (headless only). A batch_index past the batch is refused
    (ComfyUI silently takes the last latent); a length past the end takes what is left, as ComfyUI."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "samples": ("LATENT",),
            "batch_index": ("INT", {"default": 0, "min": 0, "max": 63}),
            "length": ("INT", {"default": 1, "min": 1, "max": 64}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "frombatch"
    CATEGORY = "latent/batch"

    def frombatch(self, samples, batch_index, length):
        from ..sld_core.latent_batch import check_samples, latent_from_batch

        size = check_samples(samples).shape[0]
        if batch_index >= size:
            raise NodeInputError("batch_index", f"{batch_index} is past the end of a batch of {size} "
                                                f"latent{'s' if size > 1 else ''} (positions 0 to {size - 1})")
        return (latent_from_batch(samples, batch_index, length),)


class SetLatentNoiseMask:
    """ComfyUI's core SetLatentNoiseMask (headless only): samplers repaint only where the mask is 1."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "mask": ("MASK",)}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "set_mask"
    CATEGORY = "latent/inpaint"

    def set_mask(self, samples, mask):
        from ..sld_core.inpaint import as_mask_batch
        from ..sld_core.latent_batch import check_samples

        check_samples(samples)
        out = dict(samples)
        out["noise_mask"] = as_mask_batch(mask, "mask")
        return (out,)


class VAEEncodeForInpaint:
    """ComfyUI's core VAEEncodeForInpaint (headless only): the image encoded with grey under the mask,
    and the mask, grown by `grow_mask_by` pixels, as the latent's noise mask (use denoise 1.0)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "pixels": ("IMAGE",), "vae": ("VAE",), "mask": ("MASK",),
            "grow_mask_by": ("INT", {"default": 6, "min": 0, "max": 64, "step": 1}),
        }}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "encode"
    CATEGORY = "latent/inpaint"

    def encode(self, vae, pixels, mask, grow_mask_by=6):
        from ..sld_core.inpaint import inpaint_pixels

        height, width = pixels.shape[1:3]
        if mask.ndim < 2 or tuple(mask.shape[-2:]) != (height, width):
            got = "x".join(str(s) for s in mask.shape[-2:][::-1])
            hint = " (LoadImage gives a 64x64 empty mask for an image without alpha)" if got == "64x64" else ""
            raise NodeInputError("mask", f"the mask is {got}, the image {width}x{height}: they must match{hint}")
        masks = mask.reshape(-1, *mask.shape[-2:]).shape[0]
        if masks not in (1, pixels.shape[0]):
            raise NodeInputError("mask", f"{masks} masks for {pixels.shape[0]} images (give one, or one per image)")
        if height < vae.downscale or width < vae.downscale:
            raise NodeInputError("pixels", f"the image is {width}x{height}; the VAE needs at least "
                                           f"{vae.downscale}x{vae.downscale} pixels")
        filled, noise_mask = inpaint_pixels(pixels, mask, vae.downscale, grow_mask_by)
        return ({"samples": vae.encode(filled), "noise_mask": noise_mask},)
