"""Latent nodes for headless mode, as ComfyUI's: `EmptyLatentImage`, `VAEEncode`, `VAEDecode`."""

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
