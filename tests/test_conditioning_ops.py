"""ComfyUI's conditioning nodes headless, and multi-entry conditioning inside the sampler.

Node outputs are checked against the closed forms of ComfyUI 0.3.64's nodes.py; the sampler against a
reference written here from ComfyUI's documented math (comfy/samplers.py): each input's x̂₀ is
Σ mult·x̂₀ₑ / Σ mult over the entries that apply at σ (σ_end ≤ σ ≤ σ_start, σ of a percentage p the
schedule's σ at timestep (1 − p)·999); an area entry sees only its crop of x and weighs `strength`,
ramped over min(8, side // 4) cells at each side that is not the image border; an area entry of one
input is also evaluated in every other input with the embedding of its smallest entry containing the
area (a whole-image entry contains all). A fake denoiser whose output depends on the crop (its mean),
the embedding and the pooled output makes every one of these visible.
"""
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from comfyui_sld.nodes import CORE_NODE_CLASS_MAPPINGS
from comfyui_sld.nodes.conditioning_ops import (ConditioningAverage, ConditioningCombine, ConditioningConcat,
                                                ConditioningSetArea, ConditioningSetAreaPercentage,
                                                ConditioningSetTimestepRange, ConditioningZeroOut)
from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.guidance import SLDParams, sld_guidance
from comfyui_sld.sld_core.guiders import BasicGuider, CFGGuider, SLDGuider
from comfyui_sld.sld_core.model_sampling import DiscreteSchedule
from comfyui_sld.sld_core.models.model import Model


def embedding(seed, tokens=77, dim=8):
    return torch.randn(1, tokens, dim, generator=torch.Generator().manual_seed(seed))


def cond(seed, tokens=77, **extras):
    return [[embedding(seed, tokens), dict(extras)]]


def combine(*conditionings):
    out = conditionings[0]
    for other in conditionings[1:]:
        (out,) = ConditioningCombine().combine(out, other)
    return out


def area(conditioning, width, height, x, y, strength=1.0):
    return ConditioningSetArea().append(conditioning, width, height, x, y, strength)[0]


def timestep_range(conditioning, start, end):
    return ConditioningSetTimestepRange().set_range(conditioning, start, end)[0]


# ---- the nodes' outputs --------------------------------------------------------------------------------------


def test_the_nodes_are_registered_for_headless_runs_only():
    for name in ("ConditioningCombine", "ConditioningConcat", "ConditioningAverage", "ConditioningSetArea",
                 "ConditioningSetAreaPercentage", "ConditioningSetTimestepRange", "ConditioningZeroOut"):
        assert CORE_NODE_CLASS_MAPPINGS[name].RETURN_TYPES == ("CONDITIONING",)


def test_inputs_are_comfyuis():
    area_inputs = ConditioningSetArea.INPUT_TYPES()["required"]
    assert area_inputs["width"] == ("INT", {"default": 64, "min": 64, "max": 16384, "step": 8})
    assert area_inputs["x"] == ("INT", {"default": 0, "min": 0, "max": 16384, "step": 8})
    assert area_inputs["strength"] == ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01})
    percent = ConditioningSetAreaPercentage.INPUT_TYPES()["required"]
    assert percent["height"] == ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})
    assert percent["y"] == ("FLOAT", {"default": 0, "min": 0.0, "max": 1.0, "step": 0.01})
    ranged = ConditioningSetTimestepRange.INPUT_TYPES()["required"]
    assert ranged["start"] == ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001})
    assert ranged["end"] == ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001})
    averaged = ConditioningAverage.INPUT_TYPES()["required"]
    assert list(averaged) == ["conditioning_to", "conditioning_from", "conditioning_to_strength"]
    assert averaged["conditioning_to_strength"][1]["default"] == 1.0
    assert list(ConditioningCombine.INPUT_TYPES()["required"]) == ["conditioning_1", "conditioning_2"]


def test_combine_is_both_lists_in_order():
    a, b = cond(1) + cond(2), cond(3)
    (out,) = ConditioningCombine().combine(a, b)
    assert [entry[0] for entry in out] == [a[0][0], a[1][0], b[0][0]]


def test_concat_appends_the_first_from_entry_to_every_to_entry(caplog):
    to = combine(cond(1, pooled_output=torch.ones(1, 4)), cond(2, tokens=154))
    source = combine(cond(3), cond(4))
    (out,) = ConditioningConcat().concat(to, source)
    for (embedding_to, extras_to), (result, extras) in zip(to, out):
        assert torch.equal(result, torch.cat([embedding_to, source[0][0]], dim=1))
        assert extras == extras_to and extras is not extras_to
    assert "only the first" in caplog.text


@pytest.mark.parametrize("to_tokens, from_tokens", [(77, 77), (77, 154), (154, 77)])
def test_average_is_a_lerp_over_the_to_tokens(to_tokens, from_tokens):
    to = cond(1, tokens=to_tokens, pooled_output=torch.full((1, 4), 2.0), width=512)
    source = cond(2, tokens=from_tokens, pooled_output=torch.full((1, 4), 6.0))
    (out,) = ConditioningAverage().addWeighted(to, source, 0.3)
    expected_from = torch.zeros(1, to_tokens, 8)
    shared = min(to_tokens, from_tokens)
    expected_from[:, :shared] = source[0][0][:, :shared]  # cut, or padded with zeros
    assert torch.allclose(out[0][0], 0.3 * to[0][0] + 0.7 * expected_from, atol=1e-7)
    assert torch.allclose(out[0][1]["pooled_output"], torch.full((1, 4), 0.3 * 2 + 0.7 * 6))
    assert out[0][1]["width"] == 512 and torch.equal(to[0][1]["pooled_output"], torch.full((1, 4), 2.0))


def test_average_gives_an_entry_without_pooled_output_the_from_one():
    (out,) = ConditioningAverage().addWeighted(cond(1), cond(2, pooled_output=torch.full((1, 4), 6.0)), 0.25)
    assert torch.allclose(out[0][1]["pooled_output"], torch.full((1, 4), 6.0))


def test_zero_out_zeroes_embedding_and_pooled_output_and_keeps_the_rest():
    source = cond(1, pooled_output=torch.ones(1, 4), width=1024)
    (out,) = ConditioningZeroOut().zero_out(source)
    assert torch.equal(out[0][0], torch.zeros(1, 77, 8))
    assert torch.equal(out[0][1]["pooled_output"], torch.zeros(1, 4)) and out[0][1]["width"] == 1024
    assert torch.equal(source[0][1]["pooled_output"], torch.ones(1, 4))


def test_set_area_stores_latent_cells_and_strength():
    source = cond(1)
    out = area(source, width=100, height=64, x=20, y=9, strength=2.5)
    assert out[0][1] == {"area": (8, 12, 1, 2), "strength": 2.5, "set_area_to_bounds": False}
    assert out[0][0] is source[0][0] and source[0][1] == {}


def test_set_area_percentage_and_timestep_range_store_their_values():
    (out,) = ConditioningSetAreaPercentage().append(cond(1), 0.5, 0.25, 0.1, 0.2, 0.8)
    assert out[0][1] == {"area": ("percentage", 0.25, 0.5, 0.2, 0.1), "strength": 0.8, "set_area_to_bounds": False}
    assert timestep_range(cond(1), 0.2, 0.7)[0][1] == {"start_percent": 0.2, "end_percent": 0.7}


@pytest.mark.parametrize("start, end", [(0.7, 0.3), (0.5, 0.5)])
def test_an_empty_timestep_range_is_refused_naming_end(start, end):
    with pytest.raises(InvalidInputError, match=r"^end: the range from start .* never apply"):
        timestep_range(cond(1), start, end)


# ---- inside the sampler: a fake denoiser and the closed-form reference ----------------------------------------


class FakeModel:
    """x̂₀ = mean of the embedding + ½·mean of x over the crop + ¼·x (+ mean of the pooled output for
    SDXL-like conditionings): a crop's prediction differs from the same pixels of the whole image's."""

    def __init__(self, sdxl=False):
        self.schedule = DiscreteSchedule()
        self.device, self.dtype = torch.device("cpu"), torch.float32
        self.execution = types.SimpleNamespace(fused_guidance=False)
        self.calls, self.added_calls = [], []
        if sdxl:
            self.added_inputs = self._added_inputs

    def _added_inputs(self, extras, prompt_types, batch, latent_shape):
        self.added_calls.append((prompt_types, latent_shape))
        return (torch.cat([e["pooled_output"].expand(batch, -1) for e in extras]),)

    def denoise(self, x, sigma, context):
        context, added = context if isinstance(context, tuple) else (context, ())
        self.calls.append(tuple(x.shape))
        return fake_prediction(x, context, added[0] if added else None)

    def predict_eps(self, x, sigma, context):
        return (x - self.denoise(x, sigma, context)) / sigma.view(-1, 1, 1, 1)


def fake_prediction(x, context, pooled=None):
    out = context.mean(dim=(1, 2)).view(-1, 1, 1, 1) + 0.5 * x.mean(dim=(1, 2, 3), keepdim=True) + 0.25 * x
    return out if pooled is None else out + pooled.mean(dim=1).view(-1, 1, 1, 1)


def ramp(start, length, full):
    """Per-cell factors along one side of an area of `length` cells at `start` in `full` cells."""
    cells = min(8, length // 4)
    factors = torch.ones(length)
    for i in range(length):
        if start != 0 and i < cells:
            factors[i] *= (i + 1) / cells
        if start + length < full and i >= length - cells:
            factors[i] *= (length - i) / cells
    return factors


def reference_average(x, units):
    """Σ mult·x̂₀ / Σ mult over `units` = [(embedding, area (h, w, y, x) in cells or None, strength, pooled)]."""
    height, width = x.shape[2:]
    total, weights = torch.zeros_like(x), torch.full_like(x, 1e-37)
    for context, box, strength, pooled in units:
        if box is None:
            total += strength * fake_prediction(x, context, pooled)
            weights += strength
            continue
        h, w, y, left = box
        h, w = min(h, height - y), min(w, width - left)
        crop = x[:, :, y:y + h, left:left + w]
        mult = strength * ramp(y, h, height)[:, None] * ramp(left, w, width)[None, :]
        total[:, :, y:y + h, left:left + w] += mult * fake_prediction(crop, context, pooled)
        weights[:, :, y:y + h, left:left + w] += mult
    return total / weights


def latent(height=16, width=24, batch=2, seed=5):
    return torch.randn(batch, 4, height, width, generator=torch.Generator().manual_seed(seed))


def test_two_areas_with_strengths_feathered_and_their_twins_in_the_negative():
    model = FakeModel()
    p0, p1, p2, n0, n1 = (cond(s) for s in range(5))
    a1, a2, an1 = (8, 12, 4, 8), (16, 16, 0, 16), (12, 16, 2, 6)  # (h, w, y, x) cells; a2 runs past the right edge
    positive = combine(p0, area(p1, 96, 64, 64, 32, 1.5), area(p2, 128, 128, 128, 0, 0.7))
    negative = combine(n0, area(n1, 128, 96, 48, 16, 0.8))
    assert positive[1][1]["area"] == a1 and positive[2][1]["area"] == a2 and negative[1][1]["area"] == an1
    x, sigma = latent(), torch.full((2,), 3.0)

    out = CFGGuider(model, positive, negative, 6.0)(x, sigma)

    e = [c[0][0] for c in (p0, p1, p2, n0, n1)]
    cond_units = [(e[0], None, 1.0, None), (e[1], a1, 1.5, None), (e[2], a2, 0.7, None),
                  (e[0], an1, 0.8, None)]  # the negative's area, with the positive's smallest entry containing it
    uncond_units = [(e[3], None, 1.0, None), (e[4], an1, 0.8, None),
                    (e[4], a1, 1.5, None),  # inside n1's area: n1's embedding
                    (e[3], a2, 0.7, None)]  # not inside: the whole-image entry's
    uncond, cond_ = reference_average(x, uncond_units), reference_average(x, cond_units)
    assert torch.allclose(out, uncond + 6.0 * (cond_ - uncond), atol=1e-5)
    assert sorted(model.calls) == sorted([(4, 4, 16, 24), (4, 4, 8, 12), (4, 4, 16, 8), (4, 4, 12, 16)])


def test_percentage_areas_resolve_against_the_latent():
    model = FakeModel()
    (positive,) = ConditioningSetAreaPercentage().append(cond(1), 0.5, 0.25, 0.5, 0.3, 2.0)
    x = latent()
    out = BasicGuider(model, combine(cond(0), positive))(x, torch.full((2,), 1.0))
    box = (4, 12, 5, 12)  # round(0.25·16), round(0.5·24), round(0.3·16), round(0.5·24)
    expected = reference_average(x, [(embedding(0), None, 1.0, None), (embedding(1), box, 2.0, None)])
    assert torch.allclose(out, expected, atol=1e-6)


def test_timestep_ranges_gate_entries_per_sigma():
    model = FakeModel()
    early, late = timestep_range(cond(1), 0.0, 0.5), timestep_range(cond(2), 0.5, 1.0)
    guider = BasicGuider(model, combine(early, late))
    half = float(DiscreteSchedule().sigma(torch.tensor(499.5)))  # σ at 50%: timestep (1 − 0.5)·999
    x = latent()
    for value, units in [(half * 1.5, [1]), (half, [1, 2]), (half * 0.5, [2])]:
        expected = sum(fake_prediction(x, embedding(s)) for s in units) / len(units)
        assert torch.allclose(guider(x, torch.full((2,), value)), expected, atol=1e-6), value


def test_where_no_entry_applies_the_prediction_is_zero_as_in_comfyui():
    guider = BasicGuider(FakeModel(), timestep_range(cond(1), 0.0, 0.5))
    assert torch.equal(guider(latent(), torch.full((2,), 0.05)), torch.zeros(2, 4, 16, 24))


def test_cfg_one_evaluates_the_positive_entries_only():
    model = FakeModel()
    x = latent()
    out = CFGGuider(model, combine(cond(1), cond(2)), combine(cond(3), cond(4)), 1.0)(x, torch.full((2,), 2.0))
    assert model.calls == [(4, 4, 16, 24)]
    assert torch.allclose(out, (fake_prediction(x, embedding(1)) + fake_prediction(x, embedding(2))) / 2, atol=1e-6)


def test_each_entry_brings_its_own_pooled_output_and_the_whole_latents_size():
    model = FakeModel(sdxl=True)
    pooled = [torch.randn(1, 6, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    positive = combine(cond(1, pooled_output=pooled[0]), area(cond(2, pooled_output=pooled[1]), 64, 64, 0, 0))
    x, sigma = latent(), torch.full((2,), 2.0)
    out = CFGGuider(model, positive, cond(3, pooled_output=pooled[2]), 3.0)(x, sigma)
    box = (8, 8, 0, 0)
    cond_ = reference_average(x, [(embedding(1), None, 1.0, pooled[0]), (embedding(2), box, 1.0, pooled[1])])
    uncond = reference_average(x, [(embedding(3), None, 1.0, pooled[2]), (embedding(3), box, 1.0, pooled[2])])
    assert torch.allclose(out, uncond + 3.0 * (cond_ - uncond), atol=1e-5)
    assert {shape for _, shape in model.added_calls} == {tuple(x.shape)}
    assert sorted(types_ for types_, _ in model.added_calls) == [["negative", "positive"], ["negative", "positive"]]


def test_sld_with_a_combined_positive_uses_the_global_safety_prediction():
    model = FakeModel()
    params = SLDParams(guidance_scale=1000.0, warmup_steps=1, threshold=0.5, momentum_scale=0.3, momentum_beta=0.4)
    positive, negative, safety = combine(cond(1), cond(2)), cond(3), cond(4)
    sigmas = torch.tensor([4.0, 2.0, 1.0, 0.0])
    guider = SLDGuider(model, positive, negative, safety, 5.0, params)
    guider.prepare(sigmas)
    x, momentum = latent(), None
    for step, value in enumerate(sigmas[:-1].tolist()):
        model.calls.clear()
        out = guider(x, torch.full((2,), value))

        def eps(prediction):
            return (x - prediction) / value

        eps_cond = eps((fake_prediction(x, embedding(1)) + fake_prediction(x, embedding(2))) / 2)
        expected, momentum = sld_guidance(eps(fake_prediction(x, embedding(3))), eps_cond,
                                          eps(fake_prediction(x, embedding(4))), 5.0, params, momentum, step)
        assert torch.allclose(out, x - value * expected, atol=1e-4 * value), step
        assert model.calls == [(8, 4, 16, 24)]  # negative, two positives and the safety concept in one call
    cfg = CFGGuider(model, positive, negative, 5.0)(x, torch.full((2,), value))
    assert (out - cfg).abs().max() > 1e-2  # SLD acted


# ---- on the tiny real model -----------------------------------------------------------------------------------


@pytest.fixture
def tiny_model(tiny_components):
    return Model(tiny_components["unet"])


def tiny_cond(seed, **extras):
    return [[torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(seed)), extras]]


def test_combine_on_the_tiny_model_is_the_mean_of_the_two_predictions(tiny_model):
    x, sigma = latent(8, 8, batch=1) * 5, torch.full((1,), 5.0)
    a, b = tiny_cond(1), tiny_cond(2)
    both = BasicGuider(tiny_model, combine(a, b))(x, sigma)
    mean = (BasicGuider(tiny_model, a)(x, sigma) + BasicGuider(tiny_model, b)(x, sigma)) / 2
    assert torch.allclose(both, mean, atol=1e-5)


def test_a_whole_image_area_of_any_strength_is_the_plain_prediction(tiny_model):
    x, sigma = latent(8, 8, batch=1) * 5, torch.full((1,), 5.0)
    plain = CFGGuider(tiny_model, tiny_cond(1), tiny_cond(2), 7.0)(x, sigma)
    whole = CFGGuider(tiny_model, area(tiny_cond(1), 64, 64, 0, 0, strength=3.0), tiny_cond(2), 7.0)(x, sigma)
    assert torch.allclose(whole, plain, atol=1e-5)


def test_sdxl_entries_each_bring_their_pooled_output_on_the_tiny_sdxl_unet():
    import tiny_families
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    model = Model(UNet2DConditionModel(**tiny_families.unet_config("SDXL")).eval(), added_conditioning="sdxl")
    width = tiny_families.L_WIDTH + tiny_families.G_WIDTH

    def sdxl_cond(seed, **extras):
        generator = torch.Generator().manual_seed(seed)
        return [[torch.randn(1, 77, width, generator=generator),
                 {"pooled_output": torch.randn(1, tiny_families.G_PROJECTION, generator=generator), **extras}]]

    x, sigma = latent(8, 8, batch=1) * 5, torch.full((1,), 5.0)
    a, b = sdxl_cond(1), sdxl_cond(2, width=512, height=768)
    both = BasicGuider(model, combine(a, b))(x, sigma)
    mean = (BasicGuider(model, a)(x, sigma) + BasicGuider(model, b)(x, sigma)) / 2
    assert torch.allclose(both, mean, atol=1e-5)
    swapped = [[b[0][0], a[0][1]]]  # b's embedding with a's pooled output and sizes: another prediction
    assert (BasicGuider(model, swapped)(x, sigma) - BasicGuider(model, b)(x, sigma)).abs().max() > 1e-3
    with_area = CFGGuider(model, combine(a, area(b, 64, 32, 0, 16)), sdxl_cond(3), 5.0)(x, sigma)
    assert with_area.shape == x.shape and torch.isfinite(with_area).all()


# ---- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda c: area(c, 64, 64, 200, 0),
                                  lambda c: ConditioningSetAreaPercentage().append(c, 0.5, 0.5, 0.0, 1.0, 1.0)[0]])
def test_an_area_starting_outside_the_latent_is_refused_naming_the_input(make):
    guider = CFGGuider(FakeModel(), combine(cond(1), make(cond(2))), cond(3), 7.0)
    with pytest.raises(InvalidInputError, match=r"^positive: the area of entry 2 of 2 at .* outside the 192x128"):
        guider(latent(), torch.full((2,), 1.0))


def test_masks_and_controlnets_are_refused_by_name():
    with pytest.raises(InvalidInputError, match="^negative: the conditioning carries a mask"):
        CFGGuider(FakeModel(), cond(1), cond(2, mask=torch.ones(1, 8, 8)), 7.0)


COMFYUI_DIR = os.environ.get("SLD_COMFYUI_DIR")


@pytest.mark.skipif(not COMFYUI_DIR, reason="needs a real ComfyUI: set SLD_COMFYUI_DIR (and SLD_COMFYUI_PYTHON)")
def test_the_averages_equal_comfyuis_own_calc_cond_batch(tmp_path):
    """ComfyUI's process_conds + calc_cond_batch on 60 random multi-entry cases (areas, percentages,
    strengths, ranges, twins between three inputs) against the SLD guider's `denoised`, same fake."""
    out = tmp_path / "cases.pt"
    python = os.environ.get("SLD_COMFYUI_PYTHON", sys.executable)
    script = Path(__file__).with_name("comfyui_conditioning_reference.py")
    done = subprocess.run([python, str(script), COMFYUI_DIR, str(out)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for case in torch.load(out):
        lists = case["lists"]
        guider = SLDGuider(FakeModel(), lists["positive"], lists["negative"], lists["safety_concept"], 7.0,
                           SLDParams(guidance_scale=1000.0, warmup_steps=0, threshold=0.01, momentum_scale=0.3,
                                     momentum_beta=0.4))
        for value, expected in zip(case["sigmas"], case["outputs"]):
            ours = guider.denoised(case["x"], torch.full((2,), value), ("positive", "negative", "safety"))
            for mine, theirs in zip(ours, expected):
                assert torch.allclose(mine, theirs, rtol=1e-5, atol=1e-6), (value, lists)
