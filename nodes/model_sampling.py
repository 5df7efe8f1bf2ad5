"""ComfyUI's `ModelSamplingDiscrete` for headless mode: how a model's output is read (ε or v) and
whether its schedule is rescaled to zero terminal SNR.

A workflow uses it to override what the loader decided for a single file (`sld_core.models.families`),
e.g. for a v-prediction SDXL fine-tune saved without ComfyUI's ``v_pred`` marker. SLD then acts on the
ε the v output implies, ε = (x − x̂₀)/σ. Inside ComfyUI its own node is used.
"""
from .errors import NodeInputError

# ComfyUI's choices, in its order; the ones after v_prediction are refused headless.
SAMPLING = ["eps", "v_prediction", "lcm", "x0", "img_to_img"]
SUPPORTED = ("eps", "v_prediction")


class ModelSamplingDiscrete:
    """ComfyUI's core ModelSamplingDiscrete (headless only)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL",),
                "sampling": (SAMPLING,),
                "zsnr": ("BOOLEAN", {"default": False}),
            }
        }

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "patch"
    CATEGORY = "advanced/model"
    DESCRIPTION = "Sets how the model's output is read (eps or v_prediction) and zero-terminal-SNR rescaling."

    def patch(self, model, sampling, zsnr):
        if sampling not in SUPPORTED:
            raise NodeInputError("sampling", f"{sampling!r} sampling is not supported headless (eps and v_prediction are)")
        return (model.with_sampling(sampling, zsnr),)
