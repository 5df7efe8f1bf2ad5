"""Stand-in for ComfyUI's latent_preview.py: the per-step callback of a KSampler (progress only)."""
import comfy.utils


def prepare_callback(model, steps, x0_output_dict=None):
    """A sampler callback `(step, x0, x, total_steps)` that advances a ProgressBar, as ComfyUI's does."""
    bar = comfy.utils.ProgressBar(steps)

    def callback(step, x0, x, total_steps):
        if x0_output_dict is not None:
            x0_output_dict["x0"] = x0
        bar.update_absolute(step + 1, total_steps, None)

    return callback
