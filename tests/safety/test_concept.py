"""The concept checker decides exactly as diffusers' `StableDiffusionSafetyChecker` (same flags, same
blacked-out pixels) on a seeded tiny random checker whose concept embeddings and thresholds are set
so that the outcome is known in advance: a flagged third image, a decision the special-care
adjustment flips, and a score that rounds to 0 (not flagged: rounding and a strict > 0)."""
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comfyui_sld.sld_core.errors import SafetyCheckerError
from comfyui_sld.sld_core.safety import apply_action, load_concept_checker
from comfyui_sld.sld_core.safety.concept import concept_decision

TINY_VISION = dict(hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                   image_size=32, patch_size=8)  # one 64-wide head: what a single file implies



def images_batch():
    """Four 40×48 images, exact multiples of 1/255 (a PNG round trip keeps them): a noise, a flat
    colour, a gradient, another noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:48]
    batch = np.stack([
        rng.integers(0, 256, (40, 48, 3)),
        np.broadcast_to([200, 60, 40], (40, 48, 3)),
        np.stack([x * 5, y * 6, np.full_like(x, 128)], -1),
        rng.integers(0, 256, (40, 48, 3)) // 2,
    ]).astype(np.float32) / 255
    return torch.from_numpy(batch)


def diffusers_checker():
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(0)
    config = CLIPConfig(vision_config=TINY_VISION, projection_dim=32)
    return StableDiffusionSafetyChecker(config).eval()


def clip_input(images):
    """The pipeline's preprocessing (`run_safety_checker`): numpy_to_pil, then the feature extractor."""
    from diffusers.pipelines.pipeline_utils import DiffusionPipeline
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return processor(DiffusionPipeline.numpy_to_pil(images.numpy()), return_tensors="pt").pixel_values


def embeddings(model, images):
    with torch.no_grad():
        e = model.visual_projection(model.vision_model(clip_input(images))[1])
    return torch.nn.functional.normalize(e)


def direction(e, target):
    """A unit concept vector that image `target` is closer to than any other image."""
    others = torch.cat([e[:target], e[target + 1:]]).mean(0)
    return torch.nn.functional.normalize(e[target] - others, dim=0)


def design(model, images, special_fires):
    """Set embeddings and thresholds: concept 0 fires for image 2 only; concept 1 sits 0.005 under
    its threshold for image 1 (fires only with the special-care +0.01, which special concept 0 gives
    image 1 when `special_fires`); concept 2 exceeds its threshold by 0.0004 for image 3 (rounds to
    0.0: not flagged). Everything else is far below threshold."""
    e = embeddings(model, images)
    with torch.no_grad():
        model.concept_embeds.copy_(-e.mean(0).expand(17, -1))
        model.concept_embeds_weights.fill_(0.9)
        model.special_care_embeds.copy_(-e.mean(0).expand(3, -1))
        model.special_care_embeds_weights.fill_(0.9)
        for concept, image, offset in ((0, 2, None), (1, 1, +0.005), (2, 3, -0.0004)):
            c = direction(e, image)
            cos = e @ c
            model.concept_embeds[concept] = c
            if offset is None:
                model.concept_embeds_weights[concept] = (cos[image] + torch.cat([cos[:image], cos[image + 1:]]).max()) / 2
            else:
                model.concept_embeds_weights[concept] = cos[image] + offset
            others = torch.cat([cos[:image], cos[image + 1:]])
            assert (others - model.concept_embeds_weights[concept]).max() < -0.02  # the design holds
        c = direction(e, 1)
        model.special_care_embeds[0] = c
        model.special_care_embeds_weights[0] = (e @ c)[1] - 0.05 if special_fires else 2.0
    return model


@pytest.mark.parametrize("special_fires, expected", [(True, [False, True, True, False]),
                                                     (False, [False, False, True, False])])
@pytest.mark.parametrize("form", ["folder", "single_file"])
def test_same_flags_and_pixels_as_diffusers(tmp_path, special_fires, expected, form):
    images = images_batch()
    model = design(diffusers_checker(), images, special_fires)
    their_images, their_flags = model(clip_input=clip_input(images), images=images.numpy().copy())
    assert their_flags == expected  # the outcome designed in advance, by diffusers' own rule

    if form == "folder":
        model.save_pretrained(tmp_path / "checker")
        path = tmp_path / "checker"
    else:  # as SD's checkpoints store it (transformers 4 names: the vision tower nested twice)
        state = {("vision_model." + k if k.startswith("vision_model.") else k): v.contiguous()
                 for k, v in model.state_dict().items()}
        save_file(state, tmp_path / "checker.safetensors")
        path = tmp_path / "checker.safetensors"
    checker = load_concept_checker(path)
    results = checker.check(images)
    assert [r.flagged for r in results] == expected
    ours = apply_action(images, [r.flagged for r in results], "black_out")
    assert torch.equal(ours, torch.from_numpy(np.asarray(their_images, dtype=np.float32)))
    assert results[2].concepts == ("concept_0",)
    assert results[1].details["special_care"] == (["special_0"] if special_fires else [])
    assert results[1].scores["concept_1"] == (0.005 if special_fires else -0.005)
    assert results[3].scores["concept_2"] == 0.0 and not results[3].flagged  # 0.0004 rounds to 0: not > 0


def test_sensitivity_is_diffusers_adjustment():
    """Without a special-care hit, sensitivity s is diffusers' base adjustment: +0.005 brings a score of
    −0.005 to 0.0, still not > 0; +0.006 flags it."""
    special = np.array([[0.1, 0.1, 0.1]], np.float32)
    concept = np.array([[0.5] * 17], np.float32)
    weights = [0.505] + [0.9] * 16
    assert not concept_decision(special, concept, [0.9] * 3, weights)[0].flagged
    assert not concept_decision(special, concept, [0.9] * 3, weights, adjustment=0.005)[0].flagged
    assert concept_decision(special, concept, [0.9] * 3, weights, adjustment=0.006)[0].flagged


@pytest.mark.parametrize("s, flags, scores", [
    # s = +0.004. special: 0.30−0.31+s = −0.006 (no); 0.95−0.93+s = 0.024 (fires) → offset s+0.01 = 0.014;
    # 0.20−0.50+0.014 = −0.286. concepts: 0.500−0.512+0.014 = 0.002 (fires; diffusers' "set to 0.01"
    # would give −0.002), 0.480−0.500+0.014 = −0.006, 0.600−0.586+0.014 = 0.028 (fires).
    (0.004, ("concept_0", "concept_2"),
     dict(special_0=-0.006, special_1=0.024, special_2=-0.286, concept_0=0.002, concept_1=-0.006, concept_2=0.028)),
    # s = −0.005: special_1 = 0.015 fires → offset 0.005; concept_0 = −0.012+0.005 = −0.007 (not flagged;
    # "set to 0.01" would flag it at 0.002: a laxer setting must not turn stricter on special care),
    # concept_1 = −0.015, concept_2 = 0.014+0.005 = 0.019.
    (-0.005, ("concept_2",),
     dict(special_0=-0.015, special_1=0.015, special_2=-0.295, concept_0=-0.007, concept_1=-0.015, concept_2=0.019)),
])
def test_nonzero_sensitivity_with_a_special_care_hit_by_hand(s, flags, scores):
    special = np.array([[0.30, 0.95, 0.20]], np.float32)
    concept = np.array([[0.500, 0.480, 0.600] + [0.0] * 14], np.float32)
    [result] = concept_decision(special, concept, [0.31, 0.93, 0.50], [0.512, 0.500, 0.586] + [0.9] * 14, adjustment=s)
    assert result.concepts == flags and result.flagged
    assert {k: result.scores[k] for k in scores} == pytest.approx(scores, abs=1e-9)
    assert result.details == {"adjustment": s, "special_care": ["special_1"]}


def test_batch_of_three_with_flagged_third_keeps_per_image_flags(tmp_path):
    """diffusers' safe pipeline crashes (IndexError) for a flagged index ≥ 2 and returns one bool;
    ours returns a list of batch length."""
    images = images_batch()[:3]
    model = design(diffusers_checker(), images_batch(), special_fires=False)
    model.save_pretrained(tmp_path / "checker")
    results = load_concept_checker(tmp_path / "checker").check(images)
    assert [r.flagged for r in results] == [False, False, True]


def test_wrong_shape_missing_and_truncated_weights_are_refused(tmp_path):
    model = diffusers_checker()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file({**state, "concept_embeds": torch.ones(17, 16)}, tmp_path / "wrong.safetensors")
    with pytest.raises(SafetyCheckerError, match="wrong shape concept_embeds"):
        load_concept_checker(tmp_path / "wrong.safetensors")
    save_file({k: v for k, v in state.items() if k != "special_care_embeds_weights"}, tmp_path / "missing.safetensors")
    with pytest.raises(SafetyCheckerError, match="missing special_care_embeds_weights"):
        load_concept_checker(tmp_path / "missing.safetensors")
    save_file(state, tmp_path / "whole.safetensors")
    data = (tmp_path / "whole.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(SafetyCheckerError) as error:
        load_concept_checker(tmp_path / "cut.safetensors", name="my checker")
    assert f"cannot run: {tmp_path / 'cut.safetensors'} is not a readable .safetensors file" in str(error.value)
