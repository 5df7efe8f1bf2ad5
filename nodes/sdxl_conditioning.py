"""ComfyUI's `CLIPTextEncodeSDXL` and `CLIPTextEncodeSDXLRefiner` for headless mode (inside ComfyUI its
own are used): an SDXL prompt with the size, crop and aesthetic-score conditioning SDXL's UNet takes.

Same inputs, defaults and CONDITIONING keys as ComfyUI's (``comfy_extras/nodes_clip_sdxl.py``); the
encoding is `sld_core.models.sdxl_clip`'s.
"""
from .compatibility import require_sdxl_base_clip
from .latent import MAX_RESOLUTION


def _size(default=1024):
    return ("INT", {"default": default, "min": 0, "max": MAX_RESOLUTION})


class CLIPTextEncodeSDXL:
    """text_g for OpenCLIP bigG, text_l for CLIP-L, plus the original size, crop and target size."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "clip": ("CLIP",),
                "width": _size(), "height": _size(), "crop_w": _size(0), "crop_h": _size(0),
                "target_width": _size(), "target_height": _size(),
                "text_g": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                "text_l": ("STRING", {"multiline": True, "dynamicPrompts": True}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "advanced/conditioning"
    DESCRIPTION = "SDXL text encoding with separate prompts for its two text encoders and size/crop conditioning."

    def encode(self, clip, width, height, crop_w, crop_h, target_width, target_height, text_g, text_l):
        require_sdxl_base_clip(clip, "CLIPTextEncodeSDXL")
        return (clip.encode_sdxl(width, height, crop_w, crop_h, target_width, target_height, text_g, text_l),)


class CLIPTextEncodeSDXLRefiner:
    """The prompt plus the aesthetic score and size the SDXL refiner's UNet is conditioned on."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "ascore": ("FLOAT", {"default": 6.0, "min": 0.0, "max": 1000.0, "step": 0.01}),
                "width": _size(), "height": _size(),
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True}),
                "clip": ("CLIP",),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "encode"
    CATEGORY = "advanced/conditioning"
    DESCRIPTION = "Text encoding for the SDXL refiner, with its aesthetic score and size conditioning."

    def encode(self, ascore, width, height, text, clip):
        # As in ComfyUI, any CLIP encodes the text; the keys only matter to a refiner's UNet.
        [[cond, extra]] = clip.encode(text)
        return ([[cond, {**extra, "aesthetic_score": ascore, "width": width, "height": height}]],)
