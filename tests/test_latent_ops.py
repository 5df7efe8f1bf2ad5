"""Latent and image resampling, batch bookkeeping and VAEEncodeForInpaint's pixel side, each against an
independent reference: closed-form loops over pixels (nearest, bilinear, area, bislerp, Lanczos-3,
mask growth, the grey fill), torch's interpolate as ComfyUI calls it (bicubic), and the seed's noise."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.inpaint import grow_mask, inpaint_pixels, latent_mask
from comfyui_sld.sld_core.latent_batch import latent_from_batch, repeat_latent
from comfyui_sld.sld_core.noise import prepare_noise
from comfyui_sld.sld_core.resample import center_crop, upscale


def source_position(i, old, new):
    """Half-pixel-centre mapping of output index i (of new) into the input (of old), clamped at 0."""
    return max((i + 0.5) * old / new - 0.5, 0.0)


def neighbours(i, old, new):
    pos = source_position(i, old, new)
    first = min(int(math.floor(pos)), old - 1)
    return first, min(first + 1, old - 1), pos - first


def reference_nearest(x, w, h):
    _, _, old_h, old_w = x.shape
    out = torch.empty(x.shape[0], x.shape[1], h, w)
    for r in range(h):
        for c in range(w):
            out[:, :, r, c] = x[:, :, min(int((r + 0.5) * old_h / h), old_h - 1), min(int((c + 0.5) * old_w / w), old_w - 1)]
    return out


def reference_bilinear(x, w, h):
    _, _, old_h, old_w = x.shape
    out = torch.empty(x.shape[0], x.shape[1], h, w, dtype=torch.float64)
    x = x.double()
    for r in range(h):
        r0, r1, tr = neighbours(r, old_h, h)
        for c in range(w):
            c0, c1, tc = neighbours(c, old_w, w)
            top = x[:, :, r0, c0] * (1 - tc) + x[:, :, r0, c1] * tc
            bottom = x[:, :, r1, c0] * (1 - tc) + x[:, :, r1, c1] * tc
            out[:, :, r, c] = top * (1 - tr) + bottom * tr
    return out.float()


@pytest.fixture
def latents():
    return torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("w, h", [(12, 9), (4, 3), (11, 5)])
def test_nearest_exact_and_bilinear_match_pixel_loops(latents, w, h):
    torch.testing.assert_close(upscale(latents, w, h, "nearest-exact"), reference_nearest(latents, w, h), rtol=0, atol=0)
    torch.testing.assert_close(upscale(latents, w, h, "bilinear"), reference_bilinear(latents, w, h), rtol=0, atol=1e-5)


def test_area_averages_blocks_when_shrinking_and_repeats_when_growing(latents):
    shrunk = upscale(latents, 4, 3, "area")
    blocks = latents.reshape(2, 4, 3, 2, 4, 2).mean(dim=(3, 5))
    torch.testing.assert_close(shrunk, blocks, rtol=0, atol=1e-6)
    grown = upscale(latents, 16, 12, "area")
    torch.testing.assert_close(grown, latents.repeat_interleave(2, 2).repeat_interleave(2, 3), rtol=0, atol=1e-6)


def test_bicubic_is_torch_bicubic_without_align_corners_or_antialias(latents):
    expected = F.interpolate(latents, size=(9, 12), mode="bicubic", align_corners=False, antialias=False)
    assert torch.equal(upscale(latents, 12, 9, "bicubic"), expected)


@pytest.mark.parametrize("size, target, kept", [
    ((6, 8), (4, 4), (slice(0, 6), slice(1, 7))),  # wider than 1:1: one column off each side
    ((8, 6), (4, 4), (slice(1, 7), slice(0, 6))),  # taller: one row off top and bottom
    ((6, 9), (16, 6), (slice(1, 5), slice(0, 9))),  # 9:6 → 16:6: round((6 − 6·(9/6)/(16/6))/2) = 1 row each side
    ((6, 9), (16, 9), (slice(0, 6), slice(0, 9))),  # 9:6 → 16:9: round(0.47) = 0, nothing cut
    ((6, 8), (8, 6), (slice(0, 6), slice(0, 8))),  # same aspect: nothing cut
])
def test_center_crop_geometry(size, target, kept):
    x = torch.arange(size[0] * size[1], dtype=torch.float32).reshape(1, 1, *size)
    assert torch.equal(center_crop(x, *target), x[:, :, kept[0], kept[1]])
    out = upscale(x, target[0], target[1], "nearest-exact", "center")
    assert torch.equal(out, reference_nearest(x[:, :, kept[0], kept[1]], *target))


def reference_slerp(a, b, t):
    """Closed form on numpy float64 vectors, with bislerp's conventions for degenerate pairs."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    ua = a / na if na else np.zeros_like(a)
    ub = b / nb if nb else np.zeros_like(b)
    dot = float(ua @ ub)
    if dot > 1 - 1e-5:
        return a
    if dot < 1e-5 - 1:
        return a * (1 - t) + b * t
    omega = math.acos(dot)
    direction = (math.sin((1 - t) * omega) * ua + math.sin(t * omega) * ub) / math.sin(omega)
    return direction * (na * (1 - t) + nb * t)


def test_bislerp_is_slerp_along_width_then_height():
    x = torch.randn(1, 3, 3, 4, generator=torch.Generator().manual_seed(5))
    x[0, :, 1, 1] = x[0, :, 1, 0] * 2.0  # a parallel pair: taken as is
    x[0, :, 2, 2] = -x[0, :, 2, 3]  # an opposite pair: straight line
    x[0, :, 0, 3] = 0.0  # a zero vector
    w, h = 7, 5
    a = x[0].double().numpy()
    rows = np.empty((3, 3, w))
    for r in range(3):
        for c in range(w):
            c0, c1, t = neighbours(c, 4, w)
            rows[:, r, c] = reference_slerp(a[:, r, c0], a[:, r, c1], t)
    expected = np.empty((3, h, w))
    for r in range(h):
        r0, r1, t = neighbours(r, 3, h)
        for c in range(w):
            expected[:, r, c] = reference_slerp(rows[:, r0, c], rows[:, r1, c], t)
    got = upscale(x, w, h, "bislerp")
    torch.testing.assert_close(got[0].double(), torch.from_numpy(expected), rtol=0, atol=1e-5)
    # slerp keeps lengths where bilinear shortens: midway between two orthogonal unit vectors
    pair = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).T.reshape(1, 2, 1, 2)
    mid = upscale(pair, 4, 1, "bislerp")[0, :, 0, 1]
    assert abs(mid.norm().item() - 1.0) < 1e-5


def lanczos3(x):
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < 3, np.sinc(x) * np.sinc(x / 3), 0.0)


def reference_lanczos_axis(values, new):
    """Lanczos-3 resampling of axis 0, its support widened by the shrink factor (antialiasing)."""
    old = values.shape[0]
    scale = old / new
    support = max(scale, 1.0)
    out = np.empty((new,) + values.shape[1:])
    for i in range(new):
        centre = (i + 0.5) * scale
        j = np.arange(max(int(centre - 3 * support), 0), min(int(math.ceil(centre + 3 * support)), old))
        weights = lanczos3((j + 0.5 - centre) / support)
        out[i] = np.tensordot(weights / weights.sum(), values[j], axes=1)
    return out


@pytest.mark.parametrize("w, h", [(30, 24), (9, 7)])
def test_lanczos_is_lanczos3_on_8bit_images(w, h):
    yy, xx = np.mgrid[0:16, 0:20] / 16.0
    image = np.stack([0.5 + 0.3 * np.sin(2 * xx + yy), 0.5 + 0.3 * np.cos(3 * yy), 0.2 + 0.6 * xx / 1.25], -1)
    x = torch.from_numpy(image.astype(np.float32)).movedim(-1, 0)[None]
    got = upscale(x, w, h, "lanczos")
    quantised = np.round(image * 255) / 255  # within half a step of what the 8-bit input holds
    expected = reference_lanczos_axis(reference_lanczos_axis(quantised, h).transpose(1, 0, 2), w).transpose(1, 0, 2)
    assert got.shape == (1, 3, h, w)
    assert torch.equal(got * 255, (got * 255).round())  # 8-bit values
    assert np.abs(got[0].movedim(0, -1).numpy() - expected).max() <= 2 / 255


def test_bad_sizes_are_refused(latents):
    with pytest.raises(InvalidInputError, match="0x3"):
        upscale(latents, 0, 3, "bilinear")
    with pytest.raises(InvalidInputError, match="lanczos"):
        upscale(latents[:, :2], 4, 4, "lanczos")  # 2 channels: not an image


def test_repeat_latent_batch_continues_batch_index_and_repeats_mask_batches():
    samples = torch.randn(2, 4, 2, 2)
    out = repeat_latent({"samples": samples, "batch_index": [2, 3]}, 3)
    assert torch.equal(out["samples"], torch.cat([samples] * 3)) and out["batch_index"] == [2, 3, 4, 5, 6, 7]
    assert "batch_index" not in repeat_latent({"samples": samples}, 2)
    masks = torch.rand(2, 1, 16, 16)
    assert torch.equal(repeat_latent({"samples": samples, "noise_mask": masks}, 2)["noise_mask"], torch.cat([masks] * 2))
    one = torch.rand(1, 1, 16, 16)
    assert repeat_latent({"samples": samples, "noise_mask": one}, 2)["noise_mask"] is one  # serves every latent


def test_latent_from_batch_slices_latents_masks_and_indices():
    samples = torch.randn(4, 4, 2, 2)
    masks = torch.rand(2, 1, 16, 16)
    out = latent_from_batch({"samples": samples, "noise_mask": masks}, 1, 2)
    assert torch.equal(out["samples"], samples[1:3]) and out["batch_index"] == [1, 2]
    assert torch.equal(out["noise_mask"], torch.stack([masks[1], masks[0]]))  # masks repeat over the batch
    rest = latent_from_batch({"samples": samples, "batch_index": [5, 6, 7, 8]}, 2, 64)  # length past the end
    assert torch.equal(rest["samples"], samples[2:]) and rest["batch_index"] == [7, 8]
    with pytest.raises(InvalidInputError, match="batch_index: 4 is past the end of a batch of 4"):
        latent_from_batch({"samples": samples}, 4, 1)


def test_latent_taken_from_a_batch_gets_the_noise_it_had_there():
    latent = {"samples": torch.zeros(4, 4, 3, 3)}
    whole = prepare_noise(latent["samples"], 9, [0, 1, 2, 3])  # drawn latent by latent, as positions are
    taken = latent_from_batch(latent, 2, 1)
    assert torch.equal(prepare_noise(taken["samples"], 9, taken["batch_index"]), whole[2:3])
    doubled = repeat_latent(taken, 2)  # positions 2 and 3 of the original batch
    assert torch.equal(prepare_noise(doubled["samples"], 9, doubled["batch_index"]), whole[2:4])


def test_latent_mask_resizes_bilinearly_repeats_channels_and_batch():
    mask = torch.zeros(1, 16, 16)
    mask[:, :, 8:] = 1.0
    got = latent_mask(mask, (3, 4, 2, 2))
    assert got.shape == (3, 4, 2, 2)
    assert torch.equal(got, torch.tensor([[0.0, 1.0], [0.0, 1.0]]).expand(3, 4, 2, 2))
    soft = latent_mask(torch.tensor([[[0.0, 1.0]]]), (1, 4, 1, 4))[0, 0, 0]
    torch.testing.assert_close(soft, torch.tensor([0.0, 0.25, 0.75, 1.0]))


def reference_grow(binary, k):
    """Closed form: set where a set pixel lies in rows/cols [i − p, i − p + k − 1], p = ceil((k − 1)/2)."""
    if k == 0:
        return binary
    p = math.ceil((k - 1) / 2)
    h, w = binary.shape
    out = np.zeros_like(binary)
    for i in range(h):
        for j in range(w):
            out[i, j] = binary[max(i - p, 0):max(i - p + k, 0), max(j - p, 0):max(j - p + k, 0)].max(initial=0)
    return out


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_grow_mask_matches_the_window_rule(k):
    binary = np.zeros((12, 10), dtype=np.float32)
    binary[5, 4] = binary[0, 9] = binary[11, 0] = 1.0
    got = grow_mask(torch.from_numpy(binary)[None, None] * 0.8, k)[0, 0].numpy()  # 0.8 rounds to 1
    assert np.array_equal(got, reference_grow(binary, k))


def test_inpaint_pixels_crops_to_multiples_fills_grey_and_grows_the_mask():
    pixels = torch.rand(2, 13, 21, 3, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(13, 21)
    mask[4:7, 5:9] = 0.7  # rounds to 1: repainted
    mask[8, 10] = 0.3  # rounds to 0: kept
    filled, noise_mask = inpaint_pixels(pixels, mask, 8, 3)
    top, left = (13 % 8) // 2, (21 % 8) // 2  # the remainder split around the centre
    crop = pixels[:, top:top + 8, left:left + 16]
    hole = np.zeros((8, 16), dtype=bool)
    hole[4 - top:7 - top, 5 - left:9 - left] = True
    assert filled.shape == (2, 8, 16, 3) and noise_mask.shape == (1, 1, 8, 16)
    assert torch.all(filled[:, torch.from_numpy(hole)] == 0.5)
    torch.testing.assert_close(filled[:, torch.from_numpy(~hole)], crop[:, torch.from_numpy(~hole)], rtol=0, atol=1e-7)
    assert np.array_equal(noise_mask[0, 0].numpy(), reference_grow(hole.astype(np.float32), 3))
