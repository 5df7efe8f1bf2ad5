"""The latent and image nodes' own rules (ComfyUI's): sizes from a 0 side and the 64-pixel floor of
LatentUpscale, ImageScale's aspect, what each keeps of the LATENT dict, and their refusals."""
import pytest
import torch

from comfyui_sld.nodes.errors import NodeInputError
from comfyui_sld.nodes.image import ImageScale, ImageScaleBy, InvertMask
from comfyui_sld.nodes.latent import (LatentFromBatch, LatentUpscale, LatentUpscaleBy, RepeatLatentBatch,
                                      SetLatentNoiseMask)


@pytest.fixture
def latent():
    return {"samples": torch.randn(2, 4, 8, 12), "batch_index": [4, 5], "noise_mask": torch.ones(1, 1, 64, 96)}


@pytest.mark.parametrize("width, height, shape", [
    (0, 128, (16, 24)),  # width from the aspect: round(12·128/8) = 192 pixels
    (160, 0, (13, 20)),  # height: round(8·160/12) = 107 pixels → 13 cells
    (32, 16, (8, 8)),  # no side below 64 pixels
    (100, 72, (9, 12)),  # pixels // 8
])
def test_latent_upscale_sizes(latent, width, height, shape):
    out, = LatentUpscale().upscale(latent, "bilinear", width, height, "disabled")
    assert tuple(out["samples"].shape[2:]) == shape
    assert out["batch_index"] == [4, 5] and out["noise_mask"] is latent["noise_mask"]  # the rest kept


def test_latent_upscale_zero_by_zero_returns_the_input(latent):
    assert LatentUpscale().upscale(latent, "bislerp", 0, 0, "center")[0] is latent


def test_latent_upscale_by_rounds_and_refuses_an_empty_result(latent):
    out, = LatentUpscaleBy().upscale(latent, "area", 0.55)
    assert tuple(out["samples"].shape[2:]) == (4, 7)  # round(4.4), round(6.6)
    with pytest.raises(NodeInputError) as error:
        LatentUpscaleBy().upscale(latent, "area", 0.05)
    assert error.value.input_name == "scale_by" and "8x12" not in str(error.value) and "12x8" in str(error.value)


def test_image_scale_keeps_the_aspect_from_a_zero_side_and_center_crops():
    image = torch.rand(1, 30, 40, 3)
    assert ImageScale().upscale(image, "lanczos", 0, 15, "disabled")[0].shape == (1, 15, 20, 3)
    assert ImageScale().upscale(image, "bicubic", 10, 0, "disabled")[0].shape == (1, 8, 10, 3)  # round(7.5)
    assert ImageScale().upscale(image, "area", 0, 0, "center")[0] is image
    squared, = ImageScale().upscale(image, "nearest-exact", 30, 30, "center")
    assert torch.equal(squared, image[:, :, 5:35])  # 40 → 30 columns, 5 off each side, no resize
    assert ImageScaleBy().upscale(image, "bilinear", 0.5)[0].shape == (1, 15, 20, 3)
    with pytest.raises(NodeInputError) as error:
        ImageScaleBy().upscale(image, "bilinear", 0.01)
    assert error.value.input_name == "scale_by"


def test_masks_invert_and_become_the_latents_noise_mask(latent):
    mask = torch.tensor([[0.0, 0.25], [1.0, 0.5]])
    assert torch.equal(InvertMask().invert(mask)[0], torch.tensor([[1.0, 0.75], [0.0, 0.5]]))
    out, = SetLatentNoiseMask().set_mask(latent, mask)
    assert out["noise_mask"].shape == (1, 1, 2, 2) and out["batch_index"] == [4, 5]
    assert "noise_mask" in latent and latent["noise_mask"].shape == (1, 1, 64, 96)  # the input is not changed


def test_batch_nodes(latent):
    repeated, = RepeatLatentBatch().repeat(latent, 2)
    assert repeated["batch_index"] == [4, 5, 6, 7] and repeated["samples"].shape[0] == 4
    taken, = LatentFromBatch().frombatch(repeated, 3, 5)
    assert taken["batch_index"] == [7] and torch.equal(taken["samples"], latent["samples"][1:])
    with pytest.raises(NodeInputError) as error:
        LatentFromBatch().frombatch(latent, 2, 1)
    assert error.value.input_name == "batch_index" and "batch of 2 latents" in str(error.value)
