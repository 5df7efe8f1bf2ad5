"""The ComfyUI bridge on SDXL, v-prediction and flow-matching MODELs (ComfyUI stand-in, tests/comfy_standin).

Inside ComfyUI the SLD nodes get ComfyUI's own models: an SDXL model whose `extra_conds` turn each
conditioning's pooled output and sizes into the UNet's added input `y`, a v-prediction model whose
x̂₀ comes from v, or a flow model (SD3, Flux) whose noise is mixed in differently. Expected values are
computed by hand from diffusers' UNets (their own `text_time` embedding from the size numbers, v turned
into ε with diffusers' formula) and the paper's SLD step (`guidance.sld_guidance`), never through the
bridge or the stand-in's model code.
"""
import copy

import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)
import torch
from test_comfy_bridge import ACTIVE, CFG, Network, close, comfy, reference_step  # noqa: F401 (comfy: fixture)

from comfyui_sld.nodes.errors import NodeInputError
from comfyui_sld.sld_core.guidance import PRESETS
from comfyui_sld.sld_core.model_sampling import DiscreteSchedule

SCHEDULE = DiscreteSchedule()  # SD's scaled-linear table: the UNet's timestep of a σ, as ComfyUI picks it
STEPS, SEED = 3, 11


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def scaled_input(x, sigma):
    return x / (sigma**2 + 1) ** 0.5, SCHEDULE.timestep(sigma.view(1)).float()


def euler_reference(eps_of, latent_shape, scale, sigmas, params):
    """x_T from the seed's noise (ComfyUI: √(1+σ₀²)·noise at full denoise), then Euler steps over the
    SLD-guided ε of `eps_of(x, σ) -> (ε_uncond, ε_cond, ε_safety)`; the latent back out of the model's space."""
    x = randn(*latent_shape, seed=SEED) * (1 + sigmas[0] ** 2).sqrt()
    momentum = None
    for i in range(len(sigmas) - 1):
        eps, momentum = reference_step(*eps_of(x, sigmas[i]), CFG, params, momentum, i)
        x = x + eps * (sigmas[i + 1] - sigmas[i])
    return x / scale


def sample(comfy, patcher, conds, params, latent_shape=(1, 4, 8, 8)):
    out = comfy.bridge.ksample_native(patcher, SEED, STEPS, CFG, "euler", "karras", conds[0], conds[1],
                                      {"samples": torch.zeros(latent_shape)}, 1.0, conds[2], params)
    return out["samples"]


def sigmas_of(comfy, patcher):
    return comfy.samplers.KSampler(patcher, STEPS, torch.device("cpu"), "euler", "karras", 1.0).sigmas


# --- SDXL: pooled output and size conditioning of every conditioning, the safety concept's included ----

@pytest.fixture(scope="module")
def sdxl_unet():
    return tiny_families.build("SDXL")["unet"]


def sdxl_patcher(comfy, unet):
    """ComfyUI's SDXL MODEL over the tiny UNet; the UNet gets ComfyUI's `y` whole (see Network)."""
    comfy_unet = copy.deepcopy(unet)
    comfy_unet.add_time_proj = torch.nn.Identity()
    return comfy.model_patcher.ModelPatcher(comfy.model_base.SDXL(Network(comfy_unet)))


def sdxl_cond(seed, **sizes):
    width = tiny_families.L_WIDTH + tiny_families.G_WIDTH
    return [[randn(1, 77, width, seed=seed), {"pooled_output": randn(1, tiny_families.G_PROJECTION, seed=seed + 50),
                                              **sizes}]]


# The prompt as CLIPTextEncodeSDXL gives it (non-default sizes and crops); negative and safety concept
# as CLIPTextEncode / SLDSafetyConcept give them: a pooled output, no sizes.
SIZES = dict(width=1024, height=768, crop_w=16, crop_h=8, target_width=512, target_height=640)


def sdxl_eps(unet, x, sigma, cond, latent_shape):
    """diffusers' SDXL UNet's ε with the size numbers ComfyUI gives this conditioning: its own, else
    the latent's size in pixels, crops 0, target = size."""
    tensor, extra = cond[0]
    width, height = extra.get("width", latent_shape[-1] * 8), extra.get("height", latent_shape[-2] * 8)
    numbers = [height, width, extra.get("crop_h", 0), extra.get("crop_w", 0), extra.get("target_height", height),
               extra.get("target_width", width)]
    xc, t = scaled_input(x, sigma)
    added = {"text_embeds": extra["pooled_output"], "time_ids": torch.tensor([numbers], dtype=torch.float32)}
    with torch.no_grad():
        return unet(xc, t, encoder_hidden_states=tensor, added_cond_kwargs=added).sample


def test_sdxl_safety_concept_reaches_the_model_with_its_pooled_output_and_sizes(comfy, sdxl_unet):
    patcher = sdxl_patcher(comfy, sdxl_unet)
    conds = (sdxl_cond(1, **SIZES), sdxl_cond(2), sdxl_cond(3))
    latent_shape = (1, 4, 8, 8)
    actual = sample(comfy, patcher, conds, ACTIVE, latent_shape)
    sigmas, scale = sigmas_of(comfy, patcher), patcher.model.latent_format.scale_factor

    def eps_of(conds):
        positive, negative, safety = conds
        return lambda x, sigma: tuple(sdxl_eps(sdxl_unet, x, sigma, c, latent_shape) for c in (negative, positive, safety))

    assert patcher.model.diffusion_model.batches == [3] * STEPS  # [positive, negative, safety] in one call
    assert close([actual], [euler_reference(eps_of(conds), latent_shape, scale, sigmas, ACTIVE)])
    # Teeth: the safety concept given the prompt's sizes, or the prompt's pooled output, is far from it;
    # and SLD moves the result (plain CFG is far too).
    wrong_sizes = (conds[0], conds[1], [[conds[2][0][0], {**conds[2][0][1], **SIZES}]])
    wrong_pooled = (conds[0], conds[1], [[conds[2][0][0], {"pooled_output": conds[0][0][1]["pooled_output"]}]])
    for wrong in (wrong_sizes, wrong_pooled):
        assert not close([actual], [euler_reference(eps_of(wrong), latent_shape, scale, sigmas, ACTIVE)])
    assert not close([actual], [sample(comfy, sdxl_patcher(comfy, sdxl_unet), conds, PRESETS["disabled"], latent_shape)])


# --- v-prediction: ε = (x − x̂₀)/σ is the ε the model's v implies ----------------------------------------

@pytest.fixture(scope="module")
def sd2_unet():
    return tiny_families.build("SD2.x")["unet"]


def sd2_cond(seed):
    return [[randn(1, 77, tiny_families.H_WIDTH, seed=seed), {}]]


def v_to_eps(unet, x, sigma, cond):
    """diffusers' ε of a v model: α_t·v + σ_t·z, with z = α_t·x the model's input (α_t = 1/√(1+σ²),
    σ_t = σ/√(1+σ²))."""
    xc, t = scaled_input(x, sigma)
    with torch.no_grad():
        v = unet(xc, t, encoder_hidden_states=cond[0][0]).sample
    alpha, sigma_t = 1 / (1 + sigma**2) ** 0.5, sigma / (1 + sigma**2) ** 0.5
    return alpha * v + sigma_t * xc


def test_v_prediction_model_is_guided_on_the_eps_its_v_implies(comfy, sd2_unet):
    ms = comfy.model_sampling
    conds = (sd2_cond(1), sd2_cond(2), sd2_cond(3))
    v_sampling = comfy.model_base.make_sampling(ms.ModelSamplingDiscrete, ms.V_PREDICTION)
    v_model = comfy.model_patcher.ModelPatcher(comfy.model_base.BaseModel(Network(sd2_unet), v_sampling))
    actual = sample(comfy, v_model, conds, ACTIVE)

    sigmas, scale = sigmas_of(comfy, v_model), v_model.model.latent_format.scale_factor
    positive, negative, safety = conds
    expected = euler_reference(lambda x, s: tuple(v_to_eps(sd2_unet, x, s, c) for c in (negative, positive, safety)),
                               (1, 4, 8, 8), scale, sigmas, ACTIVE)
    assert close([actual], [expected])

    # The same weights loaded as ε and switched to v by an object patch (ComfyUI's ModelSamplingDiscrete
    # node) sample the same; left as ε they do not (so the check can tell v from ε).
    eps_model = comfy.model_patcher.ModelPatcher(comfy.model_base.BaseModel(Network(sd2_unet)))
    read_as_eps = sample(comfy, eps_model, conds, ACTIVE)
    patched = eps_model.clone()
    patched.add_object_patch("model_sampling", v_sampling)
    assert torch.equal(sample(comfy, patched, conds, ACTIVE), actual)
    assert not close([read_as_eps], [expected])


# --- flow matching: refused by name, before anything runs -------------------------------------------------

FLOW_ERROR = "model: SLD needs an eps or v-prediction model; {} uses flow matching (CONST)"


def flow_models(comfy, sdxl_unet):
    """A Flux MODEL, and an SDXL MODEL switched to flow matching by an object patch (as ComfyUI's
    ModelSamplingSD3 node does)."""
    ms = comfy.model_sampling
    flux = comfy.model_patcher.ModelPatcher(comfy.model_base.Flux(Network(None)))
    sdxl = sdxl_patcher(comfy, sdxl_unet)
    sdxl.add_object_patch("model_sampling", comfy.model_base.make_sampling(ms.ModelSamplingDiscreteFlow, ms.CONST))
    return {"Flux": flux, "SDXL": sdxl}


@pytest.mark.parametrize("preset", ["disabled", "medium", "max"])
def test_every_sld_node_refuses_a_flow_matching_model(comfy, sdxl_unet, preset):
    from comfyui_sld.nodes.custom_sampling import SLDGuider
    from comfyui_sld.nodes.sampling import SLDKSampler

    p = PRESETS["medium"]
    custom = (p.guidance_scale, p.warmup_steps, p.threshold, p.momentum_scale, p.momentum_beta)
    conds = (sdxl_cond(1), sdxl_cond(2), sdxl_cond(3))
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    for name, patcher in flow_models(comfy, sdxl_unet).items():
        calls = [
            lambda: SLDKSampler().sample(patcher, 0, 2, CFG, "euler", "karras", conds[0], conds[1], latent, 1.0,
                                         conds[2], preset, *custom),
            lambda: SLDGuider().get_guider(patcher, conds[0], conds[1], CFG, conds[2], preset, *custom),
        ]
        for call in calls:
            with pytest.raises(NodeInputError) as error:
                call()
            assert str(error.value) == FLOW_ERROR.format(name) and "\n" not in str(error.value)
        assert patcher.model.diffusion_model.batches == []  # nothing was sampled


def test_an_eps_family_sampling_passes_and_another_kind_is_named(comfy, sdxl_unet):
    """ComfyUI's EPS family (x = x₀ + σ·noise) is accepted; a sampling of another kind is named in the error."""
    ms = comfy.model_sampling
    patcher = sdxl_patcher(comfy, sdxl_unet)
    comfy.bridge.require_eps_or_v(patcher)

    class RFLOW:  # a prediction class of neither family (as ComfyUI's COSMOS_RFLOW)
        pass

    RFLOW.__module__ = ms.__name__
    patcher.add_object_patch("model_sampling", comfy.model_base.make_sampling(ms.ModelSamplingDiscreteFlow, RFLOW))
    with pytest.raises(NodeInputError, match=r"; SDXL uses ModelSamplingDiscreteFlow \+ RFLOW sampling$"):
        comfy.bridge.require_eps_or_v(patcher)
