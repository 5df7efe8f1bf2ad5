"""Vae: ComfyUI's IMAGE/LATENT layouts, centre crop to the VAE's multiple, posterior mean, bad shapes."""
import pytest
import torch

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.models.vae import Vae, crop_to_multiple


@pytest.fixture(scope="module")
def vae(tiny_components):
    return Vae(tiny_components["vae"])


def test_decode_gives_image_layout_in_0_1(vae, tiny_components):
    latent = torch.randn(2, 4, 6, 5, generator=torch.Generator().manual_seed(0)) * 3
    image = vae.decode(latent)
    assert image.shape == (2, 6 * vae.downscale, 5 * vae.downscale, 3)
    assert image.dtype == torch.float32 and image.device.type == "cpu"
    assert 0.0 <= image.min() and image.max() <= 1.0
    with torch.no_grad():
        raw = tiny_components["vae"].decode(latent).sample
    torch.testing.assert_close(image, ((raw + 1) / 2).clamp(0, 1).movedim(1, -1), atol=1e-6, rtol=0)


def test_encode_is_the_posterior_mean_not_a_sample(vae, tiny_components):
    image = torch.rand(1, 16, 16, 3, generator=torch.Generator().manual_seed(1))
    first, second = vae.encode(image), vae.encode(image)
    assert torch.equal(first, second)
    with torch.no_grad():
        posterior = tiny_components["vae"].encode(image.movedim(-1, 1) * 2 - 1).latent_dist
    torch.testing.assert_close(first, posterior.mean, atol=1e-6, rtol=0)


def test_crop_takes_the_centre():
    image = torch.arange(21 * 19, dtype=torch.float32).reshape(1, 21, 19, 1)
    cropped = crop_to_multiple(image, 8)
    assert cropped.shape == (1, 16, 16, 1)
    assert torch.equal(cropped, image[:, 2:18, 1:17])  # remainders 5 and 3: offsets 2 and 1
    assert crop_to_multiple(image[:, :16, :16], 8).data_ptr() == image.data_ptr()


def test_encode_crops_and_ignores_alpha(vae):
    image = torch.rand(1, 17, 18, 4, generator=torch.Generator().manual_seed(2))
    latent = vae.encode(image)
    assert torch.equal(latent, vae.encode(crop_to_multiple(image[..., :3], vae.downscale)))
    assert latent.shape == (1, 4, 16 // vae.downscale, 18 // vae.downscale)


def test_wrong_shapes_are_named(vae):
    with pytest.raises(InvalidInputError, match=r"\[B, 4, h, w\], got \[1, 3, 8, 8\]"):
        vae.decode(torch.zeros(1, 3, 8, 8))
    with pytest.raises(InvalidInputError, match="got \\[1, 8, 8, 1\\]"):
        vae.encode(torch.zeros(1, 8, 8, 1))
    with pytest.raises(InvalidInputError, match="at least"):
        vae.encode(torch.zeros(1, 1, 8, 3))
