"""SLD guidance math: the reference (`sld_guidance`) against closed form and diffusers' published
values, and the compiled kernel against the reference."""
import pytest
import torch

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.guidance import (
    DEFAULT_SAFETY_CONCEPT, PRESETS, SLDParams, resolve_params, sld_guidance,
)

CUSTOM = SLDParams(guidance_scale=20.0, warmup_steps=2, threshold=0.0, momentum_scale=0.5, momentum_beta=0.7)


def random_eps(shape=(2, 4, 8, 8), seed=0, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    # small amplitude so that |ε_p − ε_S|·s_S spans both the clamped and the partial regime
    return [torch.randn(shape, generator=g) * scale for _ in range(3)]


def run_steps(fn, eps_per_step, cfg, params):
    outputs, momentum = [], None
    for step, eps in enumerate(eps_per_step):
        out, momentum = fn(*eps, cfg, params, momentum, step)
        outputs.append(out)
    return outputs, momentum


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (3, 4, 16, 8)], ids=["2x8x8", "3x16x8"])
def test_compiled_kernel_equals_reference_over_a_run(shape):
    """The torch.compile-fused kernel, every preset in turn through one compiled graph (dynamic shapes,
    parameters as a tensor), against the reference step by step; neither writes into the ν passed in."""
    from comfyui_sld.sld_core.guidance_compiled import sld_guidance_compiled

    eps_per_step = [random_eps(shape, seed=s) for s in range(12)]
    for params in list(PRESETS.values()) + [CUSTOM]:
        ref, ref_m = run_steps(sld_guidance, eps_per_step, 7.5, params)
        fused, fused_m = run_steps(sld_guidance_compiled, eps_per_step, 7.5, params)
        for a, b in zip(ref, fused):
            torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(fused_m, ref_m, rtol=1e-6, atol=1e-7)
    momentum = random_eps(shape, seed=99)[0]
    kept = momentum.clone()
    for fn in (sld_guidance, sld_guidance_compiled):
        fn(*eps_per_step[0], 7.5, PRESETS["max"], momentum, 3)
        assert torch.equal(momentum, kept)


def test_reference_matches_closed_form_elementwise():
    """Hand-computed values of eqs. 3-8 for a few elements, at a step after warm-up."""
    params = SLDParams(guidance_scale=100.0, warmup_steps=0, threshold=0.01, momentum_scale=0.5, momentum_beta=0.25)
    eps_u = torch.tensor([0.0, 0.0, 0.0, 0.0])
    eps_c = torch.tensor([0.0, 0.0, 0.5, 0.015])
    eps_s = torch.tensor([0.2, 0.004, 0.0, 0.0])  # d = -0.2 | -0.004 | 0.5 | 0.015
    momentum = torch.tensor([0.1, 0.1, 0.1, 0.1])
    out, new_m = sld_guidance(eps_u, eps_c, eps_s, 2.0, params, momentum, step=0)
    # μ = min(1, 100·|d|) where d < λ, else 0  → 1, 0.4, 0, 0
    gamma = torch.tensor([0.2 * 1.0, 0.004 * 0.4, 0.0, 0.0]) + 0.5 * momentum
    torch.testing.assert_close(out, 2.0 * (eps_c - gamma))
    torch.testing.assert_close(new_m, 0.25 * momentum + 0.75 * gamma)


def test_threshold_equality_is_not_guided():
    params = SLDParams(guidance_scale=1000.0, warmup_steps=0, threshold=0.5, momentum_scale=0.0, momentum_beta=0.0)
    eps_u = torch.zeros(2)
    eps_c = torch.tensor([0.5, 0.25])
    eps_s = torch.tensor([0.0, -0.25])  # d == λ exactly for both
    out, _ = sld_guidance(eps_u, eps_c, eps_s, 3.0, params, None, 0)
    torch.testing.assert_close(out, 3.0 * eps_c)


def test_momentum_builds_during_warmup_but_is_applied_only_after():
    params = SLDParams(guidance_scale=1000.0, warmup_steps=2, threshold=1.0, momentum_scale=0.5, momentum_beta=0.5)
    eps_u, eps_c, eps_s = torch.zeros(1), torch.zeros(1), torch.ones(1)
    m = None
    for step in range(2):  # warm-up: output is plain CFG, momentum grows
        out, m = sld_guidance(eps_u, eps_c, eps_s, 7.5, params, m, step)
        assert out.item() == 0.0
    assert m.item() == pytest.approx(0.5 * 0.5 + 0.5 * (1.0 + 0.5 * 0.5))  # ν1 = 0.5, ν2 = 0.875
    out, _ = sld_guidance(eps_u, eps_c, eps_s, 7.5, params, m, 2)
    assert out.item() == pytest.approx(-7.5 * (1.0 + 0.5 * 0.875))


def test_zero_momentum_scale_makes_momentum_irrelevant():
    params = SLDParams(guidance_scale=200.0, warmup_steps=0, threshold=0.0, momentum_scale=0.0, momentum_beta=0.0)
    eps = random_eps()
    a, _ = sld_guidance(*eps, 7.5, params, torch.full_like(eps[0], 3.0), 5)
    b, _ = sld_guidance(*eps, 7.5, params, None, 5)
    assert torch.equal(a, b)


def test_safety_term_is_multiplied_by_cfg():
    params = SLDParams(guidance_scale=1e6, warmup_steps=0, threshold=1.0, momentum_scale=0.0, momentum_beta=0.0)
    eps_u, eps_c, eps_s = random_eps()
    for cfg in (2.0, 9.0):
        out, _ = sld_guidance(eps_u, eps_c, eps_s, cfg, params, None, 0)
        # with μ ≡ 1: ε̂ = ε_u + cfg·(ε_p − ε_u − (ε_S − ε_u))
        torch.testing.assert_close(out, eps_u + cfg * (eps_c - eps_s), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("s_S, cfg, expected", [(1000, 7.5, True), (1.0, 7.5, False), (0.5, 7.5, False), (1000, 1.0, False), (1000, 0.5, False)])
def test_enabled_follows_diffusers_rule(s_S, cfg, expected):
    assert SLDParams(guidance_scale=s_S).enabled(cfg) is expected


def test_safety_pass_needed():
    weak = PRESETS["weak"]  # s_m = 0: warm-up steps never need the safety pass
    assert [weak.safety_pass_needed(i, 20) for i in (0, 14, 15, 19)] == [False, False, True, True]
    medium = PRESETS["medium"]  # s_m > 0: momentum during warm-up matters if a later step applies it
    assert medium.safety_pass_needed(0, 20) and medium.safety_pass_needed(9, 20)
    assert not medium.safety_pass_needed(0, 10)  # δ = 10 ≥ 10 steps: never applied


# The Safe Stable Diffusion model card's "SLD-Configurations" table (= the paper's), copied by hand:
# warm-up δ, s_S, λ, s_m, β_m. The card gives Weak's β_m as "–": with s_m = 0 it cannot matter.
MODEL_CARD = {
    "weak": (15, 200, 0.0, 0.0, None),
    "medium": (10, 1000, 0.01, 0.3, 0.4),
    "strong": (7, 2000, 0.025, 0.5, 0.7),
    "max": (0, 5000, 1.0, 0.5, 0.7),
}


@pytest.mark.parametrize("name", list(MODEL_CARD))
def test_presets_are_the_model_cards(name):
    p = PRESETS[name]
    ours = (p.warmup_steps, p.guidance_scale, p.threshold, p.momentum_scale, p.momentum_beta)
    card = MODEL_CARD[name]
    assert all(c is None or o == c for o, c in zip(ours, card)), (ours, card)


def test_presets_differ_from_diffusers_safety_config_only_in_weak():
    """diffusers' `SafetyConfig` (an independent copy of the same table) agrees except Weak's s_S (20 vs
    the card's 200), the one difference the README documents."""
    try:
        from diffusers.pipelines.deprecated.stable_diffusion_safe import SafetyConfig
    except ImportError:  # diffusers ≤ 0.37
        from diffusers.pipelines.stable_diffusion_safe import SafetyConfig

    for name in MODEL_CARD:
        theirs = getattr(SafetyConfig, name.upper())
        ours = PRESETS[name]
        expected_scale = 20 if name == "weak" else ours.guidance_scale
        assert theirs["sld_guidance_scale"] == expected_scale
        assert (theirs["sld_warmup_steps"], theirs["sld_threshold"], theirs["sld_momentum_scale"], theirs["sld_mom_beta"]) == (
            ours.warmup_steps, ours.threshold, ours.momentum_scale, ours.momentum_beta)


def test_disabled_preset_turns_sld_off():
    assert not PRESETS["disabled"].enabled(7.5)


def test_resolve_params():
    assert resolve_params("strong") is PRESETS["strong"]
    assert resolve_params("custom", guidance_scale=20, warmup_steps=15, threshold=0.0, momentum_scale=0.0, momentum_beta=0.0).guidance_scale == 20
    with pytest.raises(InvalidInputError, match="expected one of disabled, weak, medium, strong, max, custom"):
        resolve_params("extreme")


@pytest.mark.parametrize("field, value", [("guidance_scale", -1.0), ("warmup_steps", 2.5), ("warmup_steps", -1), ("momentum_beta", 1.5), ("momentum_scale", float("nan")), ("threshold", float("inf"))])
def test_params_validation_names_the_field(field, value):
    with pytest.raises(InvalidInputError, match=field):
        SLDParams(**{field: value})


def test_default_concept_is_diffusers_default(tiny_components):
    """The text `StableDiffusionPipelineSafe` uses when no concept is given (read from a constructed pipeline)."""
    from diffusers import DDIMScheduler, StableDiffusionPipelineSafe

    from comfyui_sld.sld_core.models.clip import load_clip_tokenizer

    c = tiny_components
    pipe = StableDiffusionPipelineSafe(
        vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=load_clip_tokenizer(), unet=c["unet"],
        scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    assert DEFAULT_SAFETY_CONCEPT == pipe.safety_concept
