"""Stand-in for comfy/sample.py: the seed's noise and the empty-latent channel fix."""
import torch


def prepare_noise(latent_image, seed, noise_inds=None):
    """Noise of the latent's shape from `torch.manual_seed(seed)` on the CPU (which reseeds the global
    generator too, as ComfyUI's does). With batch indices: one [1, C, H, W] draw per index from 0 to
    the largest, in order, and the listed ones picked."""
    generator = torch.manual_seed(seed)
    shape = latent_image.size()
    options = dict(dtype=latent_image.dtype, layout=latent_image.layout, generator=generator, device="cpu")
    if noise_inds is None:
        return torch.randn(shape, **options)
    draws = [torch.randn([1, *shape[1:]], **options) for _ in range(max(noise_inds) + 1)]
    return torch.cat([draws[i] for i in noise_inds])


def fix_empty_latent_channels(model, latent_image):
    """An all-zero latent with the wrong channel count becomes zeros with the model's channel count."""
    channels = model.get_model_object("latent_format").latent_channels
    if latent_image.shape[1] != channels and torch.count_nonzero(latent_image) == 0:
        shape = (latent_image.shape[0], channels, *latent_image.shape[2:])
        return latent_image.new_zeros(shape)
    return latent_image
