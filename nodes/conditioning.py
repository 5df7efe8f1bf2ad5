"""Text encoders: `SLDSafetyConcept` (the safety concept SLD steers away from) and, for headless
mode, ComfyUI's `CLIPTextEncode`."""
from ..sld_core.sld_params import DEFAULT_SAFETY_CONCEPT


def encode_text(clip, text, node_name):
    if clip is None:
        raise RuntimeError(
            f"{node_name}: clip input is invalid: None. If it comes from a checkpoint loader, the "
            "checkpoint has no usable text encoder."
        )
    if hasattr(clip, "encode_from_tokens_scheduled"):  # ComfyUI's CLIP: encode as its CLIPTextEncode does
        return (clip.encode_from_tokens_scheduled(clip.tokenize(text)),)
    return (clip.encode(text),)


class CLIPTextEncode:
    """ComfyUI's core text encoder (headless only; inside ComfyUI its own is used)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {"multiline": True, "dynamicPrompts": True, "tooltip": "The text to be encoded."}),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text."}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    OUTPUT_TOOLTIPS = ("A conditioning containing the embedded text used to guide the diffusion model.",)
    FUNCTION = "encode"
    CATEGORY = "conditioning"
    DESCRIPTION = "Encodes a text prompt using a CLIP model into an embedding that can be used to guide the diffusion model."

    def encode(self, clip, text):
        return encode_text(clip, text, "CLIPTextEncode")


class SLDSafetyConcept:
    """Encodes the safety concept: what Safe Latent Diffusion guides the image away from."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "text": ("STRING", {
                    "multiline": True, "dynamicPrompts": False, "default": DEFAULT_SAFETY_CONCEPT,
                    "tooltip": "The concepts to steer away from. Prefilled with the SLD paper's default concept.",
                }),
                "clip": ("CLIP", {"tooltip": "The CLIP model used for encoding the text (the checkpoint's)."}),
            }
        }

    RETURN_TYPES = ("CONDITIONING",)
    RETURN_NAMES = ("safety_concept",)
    OUTPUT_TOOLTIPS = ("The encoded safety concept, for the safety_concept input of SLD KSampler.",)
    FUNCTION = "encode"
    CATEGORY = "SLD/conditioning"
    DESCRIPTION = (
        "Encodes the safety concept for Safe Latent Diffusion (Schramowski et al., CVPR 2023). The default "
        "text is the paper's: hate, harassment, violence, suffering, nudity, ..."
    )

    def encode(self, clip, text):
        return encode_text(clip, text, "SLDSafetyConcept")
