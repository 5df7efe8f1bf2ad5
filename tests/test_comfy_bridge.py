"""The ComfyUI bridge (nodes/comfy_bridge.py) against a stand-in of ComfyUI (tests/comfy_standin).

The stand-in is ComfyUI's guider protocol written from its documented behaviour; the model behind it
is the tiny seeded UNet, seen as ComfyUI's models are (x̂₀ = x − σ·ε). Expected values are computed by
hand from the UNet's own ε and sld_core's SLD step as the paper writes it (`guidance.sld_guidance`,
the specification), never by the bridge's code path. The opt-in tests/test_comfyui.py runs the same
bridge in a real ComfyUI; with the same variable set, the last test here checks the stand-in itself
against that ComfyUI (tests/comfy_standin/agreement.py).
"""
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from comfyui_sld.sld_core.guidance import PRESETS, SLDParams, sld_guidance
from comfyui_sld.sld_core.models.model import Model

STANDIN = Path(__file__).resolve().parent / "comfy_standin"
STANDIN_ROOTS = ("comfy", "latent_preview", "folder_paths")
BRIDGE = "comfyui_sld.nodes.comfy_bridge"
COMFYUI_DIR = os.environ.get("SLD_COMFYUI_DIR")
CFG = 7.5
BATCH = 2
# SLD acting from the first step, with a momentum that matters (custom values: no preset has δ = 0 and
# a threshold that leaves part of the latent unguided).
ACTIVE = SLDParams(guidance_scale=1000.0, warmup_steps=0, threshold=0.01, momentum_scale=0.5, momentum_beta=0.7)
# Warm-up with momentum: the safety pass is needed at every step, the term applied from step 2.
WARM = SLDParams(guidance_scale=2000.0, warmup_steps=2, threshold=0.025, momentum_scale=0.5, momentum_beta=0.7)
# Warm-up without momentum: the safety pass cannot matter before step 3.
SKIPPING = SLDParams(guidance_scale=200.0, warmup_steps=3, threshold=0.0, momentum_scale=0.0, momentum_beta=0.0)


def _loaded():
    return [name for name in sys.modules if name.split(".")[0] in STANDIN_ROOTS or name == BRIDGE]


@pytest.fixture
def comfy(monkeypatch):
    """The stand-in installed as ComfyUI's modules, and the bridge imported over it, for one test."""
    import comfyui_sld.nodes as nodes_package  # imported first: its registry must not see a fake ComfyUI
    from comfyui_sld.nodes.context import in_comfyui

    assert not _loaded(), f"ComfyUI modules already imported ({_loaded()}); these tests need the stand-in"
    monkeypatch.syspath_prepend(str(STANDIN))
    try:
        names = ["comfy.samplers", "comfy.sample", "comfy.utils", "comfy.model_base", "comfy.model_patcher",
                 "comfy.model_sampling", "latent_preview", "folder_paths"]
        modules = {name.split(".")[-1]: importlib.import_module(name) for name in names}
        assert in_comfyui()
        yield SimpleNamespace(bridge=importlib.import_module(BRIDGE), **modules)
    finally:
        for name in _loaded():
            del sys.modules[name]
        if hasattr(nodes_package, "comfy_bridge"):
            delattr(nodes_package, "comfy_bridge")
    assert not in_comfyui()


class Network:
    """A diffusers UNet as a ComfyUI model's `diffusion_model`: its raw output for the scaled input at
    the timestep, recording the batch size of every call. An SDXL model's `y` (pooled output, then the
    size embeddings ComfyUI computes) goes to the UNet's added embedding as is: `unet` must be a copy
    whose own size embedding (`add_time_proj`) is the identity."""

    def __init__(self, unet):
        self.unet = unet
        self.batches = []

    @torch.no_grad()  # ComfyUI runs nodes under inference mode
    def __call__(self, xc, t, context=None, y=None, **kwargs):
        self.batches.append(xc.shape[0])
        if y is None:
            return self.unet(xc, t, encoder_hidden_states=context).sample
        pooled = y.shape[1] - 6 * 256
        added = {"text_embeds": y[:, :pooled], "time_ids": y[:, pooled:]}
        return self.unet(xc, t, encoder_hidden_states=context, added_cond_kwargs=added).sample


@pytest.fixture
def model(tiny_components):
    return Model(tiny_components["unet"])


@pytest.fixture
def patcher(comfy, model):
    """A ComfyUI MODEL (stand-in ModelPatcher) over the tiny UNet: an ε model with SD's schedule."""
    return comfy.model_patcher.ModelPatcher(comfy.model_base.BaseModel(Network(model.unet)))


def conditioning(seed, dim=32):  # the tiny text encoder's width (conftest.TINY_CONTEXT_DIM)
    return [[torch.randn(1, 77, dim, generator=torch.Generator().manual_seed(seed)), {}]]


POSITIVE, NEGATIVE, SAFETY = conditioning(1), conditioning(2), conditioning(3)
CONDS = (POSITIVE, NEGATIVE, SAFETY)


def schedule(comfy, patcher, steps=5):
    return comfy.samplers.KSampler(patcher, steps, torch.device("cpu"), "euler", "karras").sigmas


# --- the reference, by hand --------------------------------------------------------------------------

def unet_eps(model, x, sigma, cond):
    return model.predict_eps(x, sigma * x.new_ones(x.shape[0]), cond[0][0].repeat(x.shape[0], 1, 1))


def reference_step(eps_uncond, eps_cond, eps_safety, cfg, params, momentum, step):
    """sld_core's SLD step on a copy of ν (the caller keeps ν for the step's other evaluations)."""
    momentum = None if momentum is None else momentum.clone()
    return sld_guidance(eps_uncond, eps_cond, eps_safety, cfg, params, momentum, step)


def reference_sld(model, x, sigma, conds, cfg, params, momentum, step):
    """(x̂₀, ν) of one evaluation: the UNet's own ε per conditioning, the paper's step, back to x̂₀."""
    positive, negative, safety = conds
    eps, momentum = reference_step(unet_eps(model, x, sigma, negative), unet_eps(model, x, sigma, positive),
                                   unet_eps(model, x, sigma, safety), cfg, params, momentum, step)
    return x - sigma * eps, momentum


def step_of_sigma(sigmas, sigma):
    """DESIGN.md's rule: an evaluation at σ belongs to step i, the last σ_i ≥ σ with i < steps."""
    return max(i for i in range(len(sigmas) - 1) if float(sigmas[i]) >= float(sigma))


def reference_run(model, evaluations, sigmas, conds, cfg, params, by_call_count=False):
    """Expected x̂₀ of each (x, σ) of one run: every evaluation of step i starts from the momentum ν
    that step i−1's last evaluation left (zero at the run's start). `by_call_count`: the wrong rule,
    step = number of evaluations so far, to show a test tells them apart."""
    results, momentum, step_start, current = [], None, None, None
    for k, (x, sigma) in enumerate(evaluations):
        step = k if by_call_count else step_of_sigma(sigmas, sigma)
        if step != current:
            current, step_start = step, momentum
        denoised, momentum = reference_sld(model, x, sigma, conds, cfg, params, step_start, step)
        results.append(denoised)
    return results


def close(actual, expected):
    """Equal up to float rounding, relative to each tensor's scale. The bridge's ε goes through x̂₀ and
    back (x is ~15 at the first σ) and SLD's scale min(s_S·|ε_p − ε_S|, 1) is steep, so rounding grows
    to ~1e-4 of the scale; a swapped conditioning or a wrong step is off by far more than 1e-3."""
    return all(float((a - e).abs().max()) <= 1e-3 * float(e.abs().max()) for a, e in zip(actual, expected, strict=True))


# --- a sampler that records what the guider returns --------------------------------------------------

def evaluation_sigmas(sigmas, pattern):
    """The σ of each model evaluation: first order (one per step), Heun (again at σ_{i+1}) or DPM2
    (again at the geometric midpoint); the last step to σ = 0 is first order."""
    points = []
    for i in range(len(sigmas) - 1):
        points.append(sigmas[i])
        if sigmas[i + 1] > 0 and pattern == "heun":
            points.append(sigmas[i + 1])
        if sigmas[i + 1] > 0 and pattern == "dpm2":
            points.append((sigmas[i] * sigmas[i + 1]).sqrt())
    return points


def recording_sampler(comfy, pattern="euler", passes=1):
    """A ComfyUI sampler calling the guider at fixed seeded x for each σ of `pattern`, recording
    (x, σ, x̂₀). With passes=2 it samples the schedule twice, the second time under a new sample_sigmas
    tensor of equal values, as a sampler wrapper that re-runs a schedule would."""
    calls = []

    def sample(model, x, sigmas, extra_args=None, callback=None, disable=None):
        for run in range(passes):
            if run:
                extra_args["model_options"]["transformer_options"]["sample_sigmas"] = sigmas.clone()
            for k, sigma in enumerate(evaluation_sigmas(sigmas, pattern)):
                xk = torch.randn(x.shape, generator=torch.Generator().manual_seed(100 + k)) * sigma
                calls.append((xk, sigma, model(xk, sigma * x.new_ones(x.shape[0]), **extra_args)))
        return x

    return comfy.samplers.KSAMPLER(sample), calls


def run_recorded(comfy, guider, sigmas, pattern="euler", passes=1):
    sampler, calls = recording_sampler(comfy, pattern, passes)
    zeros = torch.zeros(BATCH, 4, 4, 4)
    guider.sample(zeros, zeros, sampler, sigmas, seed=0)
    return calls


def sld_guider(comfy, patcher, params, cfg=CFG, conds=CONDS):
    guider = comfy.bridge.make_guider(patcher, *conds, cfg, params)
    assert isinstance(guider, comfy.bridge.SLDComfyGuider)
    return guider


def cfg_guider(comfy, patcher, cfg=CFG):
    guider = comfy.samplers.CFGGuider(patcher)
    guider.set_conds(POSITIVE, NEGATIVE)
    guider.set_cfg(cfg)
    return guider


# --- the tests ---------------------------------------------------------------------------------------

def test_conditioning_order_and_eps_from_denoised_give_the_reference_step(comfy, patcher, model):
    sigmas = schedule(comfy, patcher)
    calls = run_recorded(comfy, sld_guider(comfy, patcher, ACTIVE), sigmas)
    evaluations = [(x, sigma) for x, sigma, _ in calls]
    actual = [denoised for _, _, denoised in calls]

    assert close(actual, reference_run(model, evaluations, sigmas, CONDS, CFG, ACTIVE))
    assert patcher.model.diffusion_model.batches == [3 * BATCH] * (len(sigmas) - 1)  # one batched call per step
    # The check has teeth: positive and negative swapped is far from what the bridge returns.
    swapped = reference_run(model, evaluations, sigmas, (NEGATIVE, POSITIVE, SAFETY), CFG, ACTIVE)
    assert not close(actual, swapped)


@pytest.mark.parametrize("preset, cfg", [("disabled", CFG), ("max", 1.0), ("strong", 0.5)])
def test_where_sld_cannot_act_make_guider_is_comfyuis_cfg_guider(comfy, patcher, preset, cfg):
    sigmas = schedule(comfy, patcher)
    guider = comfy.bridge.make_guider(patcher, *CONDS, cfg, PRESETS[preset])
    assert type(guider) is comfy.samplers.CFGGuider
    actual = run_recorded(comfy, guider, sigmas)
    expected = run_recorded(comfy, cfg_guider(comfy, patcher, cfg), sigmas)
    assert all(torch.equal(a[2], e[2]) for a, e in zip(actual, expected, strict=True))


@pytest.mark.parametrize("preset, cfg", [("disabled", CFG), ("max", 1.0)])
def test_the_sld_guider_itself_falls_back_to_comfyuis_cfg_bitwise(comfy, patcher, preset, cfg):
    """SLDComfyGuider built directly (as a subclass may be) with SLD off is ComfyUI's predict_noise."""
    sigmas = schedule(comfy, patcher)
    guider = comfy.bridge.SLDComfyGuider(patcher)
    guider.set_conds(*CONDS)
    guider.set_cfg(cfg, PRESETS[preset])
    actual = run_recorded(comfy, guider, sigmas)
    expected = run_recorded(comfy, cfg_guider(comfy, patcher, cfg), sigmas)
    assert all(torch.equal(a[2], e[2]) for a, e in zip(actual, expected, strict=True))


def test_warmup_steps_without_a_needed_safety_pass_are_plain_cfg_bitwise(comfy, patcher, model):
    sigmas = schedule(comfy, patcher, steps=6)
    actual = run_recorded(comfy, sld_guider(comfy, patcher, SKIPPING), sigmas)
    batches = list(patcher.model.diffusion_model.batches)
    plain = run_recorded(comfy, cfg_guider(comfy, patcher), sigmas)

    warmup = SKIPPING.warmup_steps
    assert batches == [2 * BATCH] * warmup + [3 * BATCH] * (len(sigmas) - 1 - warmup)
    assert all(torch.equal(a[2], p[2]) for a, p in zip(actual[:warmup], plain[:warmup]))
    assert not any(torch.allclose(a[2], p[2], atol=1e-3) for a, p in zip(actual[warmup:], plain[warmup:]))
    evaluations = [(x, sigma) for x, sigma, _ in actual]
    assert close([a[2] for a in actual], reference_run(model, evaluations, sigmas, CONDS, CFG, SKIPPING))


@pytest.mark.parametrize("pattern", ["heun", "dpm2"])
def test_two_evaluations_per_step_follow_the_step_of_sigma(comfy, patcher, model, pattern):
    """Warm-up and momentum follow the step σ falls in: Heun's corrector at σ_{i+1} belongs to step
    i+1, a DPM2 midpoint to step i; never the number of calls so far."""
    sigmas = schedule(comfy, patcher, steps=5)
    calls = run_recorded(comfy, sld_guider(comfy, patcher, WARM), sigmas, pattern)
    evaluations = [(x, sigma) for x, sigma, _ in calls]
    actual = [denoised for _, _, denoised in calls]
    assert len(calls) == 2 * (len(sigmas) - 1) - 1

    assert close(actual, reference_run(model, evaluations, sigmas, CONDS, CFG, WARM))
    by_call_count = reference_run(model, evaluations, sigmas, CONDS, CFG, WARM, by_call_count=True)
    assert not close(actual, by_call_count)


def test_momentum_restarts_with_every_sampling_run(comfy, patcher):
    """Two runs of one guider over the same sigmas tensor give the same samples: outer_sample resets
    the momentum (the sigmas object alone cannot tell the runs apart)."""
    sigmas = schedule(comfy, patcher, steps=4)
    noise = torch.randn(BATCH, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    latent = torch.zeros_like(noise)
    sampler = comfy.samplers.sampler_object("euler")
    guider = sld_guider(comfy, patcher, ACTIVE)

    first = guider.sample(noise, latent, sampler, sigmas, seed=5)
    second = guider.sample(noise, latent, sampler, sigmas, seed=5)
    fresh = sld_guider(comfy, patcher, ACTIVE).sample(noise, latent, sampler, sigmas, seed=5)
    assert torch.equal(first, second)
    assert torch.equal(first, fresh)


def test_a_new_sample_sigmas_tensor_starts_a_new_run(comfy, patcher):
    """Inside one outer_sample, evaluations under a new `sample_sigmas` tensor are a new run: the
    second pass over an equal schedule returns what the first did, bit for bit."""
    sigmas = schedule(comfy, patcher, steps=4)
    calls = run_recorded(comfy, sld_guider(comfy, patcher, ACTIVE), sigmas, passes=2)
    first, second = calls[: len(calls) // 2], calls[len(calls) // 2:]
    assert all(torch.equal(a[2], b[2]) for a, b in zip(first, second, strict=True))


def test_pre_and_post_cfg_hooks_get_comfyuis_keys_and_their_results_are_used(comfy, patcher, model):
    sigmas = schedule(comfy, patcher, steps=3)
    patcher = patcher.clone()
    shift = torch.full((BATCH, 4, 4, 4), 0.05)
    seen = []

    def pre_cfg(args):
        seen.append(("pre", args, dict(guider.conds)))
        cond, uncond, safety = args["conds_out"]
        return [cond, uncond, safety + shift]  # the bridge must go on with this list

    def post_cfg(args):
        seen.append(("post", args, dict(guider.conds)))
        return args["denoised"] * 0.5 + 1.0  # and return this

    patcher.set_model_sampler_pre_cfg_function(pre_cfg)
    patcher.set_model_sampler_post_cfg_function(post_cfg)
    guider = sld_guider(comfy, patcher, ACTIVE)
    calls = run_recorded(comfy, guider, sigmas)

    pre_keys = set(comfy.samplers.PRE_CFG_KEYS)
    post_keys = set(comfy.samplers.POST_CFG_KEYS) | {"safety_concept", "safety_concept_denoised"}
    assert [kind for kind, _, _ in seen] == ["pre", "post"] * len(calls)
    momentum = None
    for (x, sigma, returned), (_, pre, conds), (_, post, _) in zip(calls, seen[::2], seen[1::2]):
        assert set(pre) == pre_keys and set(post) == post_keys
        expected_conds = (conds["positive"], conds["negative"], conds["safety_concept"])
        assert all(a is b for a, b in zip(pre["conds"], expected_conds, strict=True))
        assert pre["conds"][0][0]["cross_attn"] is POSITIVE[0][0]  # [positive, negative, safety], in that order
        assert pre["conds"][1][0]["cross_attn"] is NEGATIVE[0][0]
        assert pre["input"] is x and pre["cond_scale"] == CFG and pre["model"] is patcher.model
        assert torch.equal(pre["sigma"], pre["timestep"]) and float(pre["sigma"][0]) == float(sigma)
        assert pre["model_options"]["transformer_options"]["sample_sigmas"] is sigmas
        for k, cond in enumerate((POSITIVE, NEGATIVE, SAFETY)):
            direct = model.denoise(x, pre["sigma"], cond[0][0].repeat(BATCH, 1, 1))
            assert torch.allclose(pre["conds_out"][k], direct, atol=1e-4)

        cond_out, uncond_out, safety_out = pre["conds_out"][0], pre["conds_out"][1], pre["conds_out"][2] + shift
        assert post["cond"] is conds["positive"] and post["uncond"] is conds["negative"]
        assert post["safety_concept"] is conds["safety_concept"]
        assert post["cond_denoised"] is cond_out and post["uncond_denoised"] is uncond_out
        assert torch.equal(post["safety_concept_denoised"], safety_out)
        assert post["input"] is x and post["cond_scale"] == CFG and post["model"] is patcher.model
        assert post["sigma"] is pre["sigma"] and post["model_options"] is pre["model_options"]

        sigma_b = sigma.view(1, 1, 1, 1)
        eps = [(x - d) / sigma_b for d in (uncond_out, cond_out, safety_out)]
        guided, momentum = reference_step(*eps, CFG, ACTIVE, momentum, step_of_sigma(sigmas, sigma))
        assert close([post["denoised"]], [x - sigma_b * guided])
        assert torch.equal(returned, post["denoised"] * 0.5 + 1.0)


def test_a_cfg_function_patch_applies_on_plain_cfg_steps_and_is_replaced_where_sld_guides(comfy, patcher, model,
                                                                                          caplog):
    """A model's sampler_cfg_function (RescaleCFG and the like) cannot be combined with SLD: the bridge
    says so once, keeps it on the steps that are plain CFG, and guides the others with SLD alone."""
    sigmas = schedule(comfy, patcher, steps=6)
    plain = run_recorded(comfy, cfg_guider(comfy, patcher), sigmas)
    patcher = patcher.clone()
    patcher.set_model_sampler_cfg_function(lambda args: args["uncond"] + (args["cond"] - args["uncond"]) * 2.0)
    patched = run_recorded(comfy, cfg_guider(comfy, patcher), sigmas)
    with caplog.at_level("WARNING"):
        actual = run_recorded(comfy, sld_guider(comfy, patcher, SKIPPING), sigmas)
    assert "CFG function patch is not applied" in caplog.text

    warmup = SKIPPING.warmup_steps
    assert not torch.allclose(patched[0][2], plain[0][2], atol=1e-3)  # the patch changes the result
    assert all(torch.equal(a[2], p[2]) for a, p in zip(actual[:warmup], patched[:warmup]))
    expected = reference_run(model, [(x, sigma) for x, sigma, _ in actual], sigmas, CONDS, CFG, SKIPPING)
    assert close([a[2] for a in actual[warmup:]], expected[warmup:])


@pytest.mark.parametrize("denoise", [1.0, 0.6])
def test_ksample_native_is_comfyuis_sampling_path_with_the_sld_guider(comfy, patcher, model, denoise):
    steps, seed = 4, 7
    image = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(9))
    samples = torch.zeros(1, 4, 4, 4) if denoise == 1.0 else image  # txt2img, or img2img
    latent = {"samples": samples, "extra": "kept"}
    out = comfy.bridge.ksample_native(patcher, seed, steps, CFG, "euler", "karras", POSITIVE, NEGATIVE, latent,
                                      denoise, SAFETY, ACTIVE)

    # By hand: the seed's noise, ComfyUI's noise scaling, Euler steps over the hand-made SLD denoiser.
    sigmas = comfy.samplers.KSampler(patcher, steps, torch.device("cpu"), "euler", "karras", denoise).sigmas
    noise = torch.randn(samples.shape, generator=torch.Generator().manual_seed(seed))
    scale = patcher.model.latent_format.scale_factor
    x = samples * scale + noise * ((1 + sigmas[0] ** 2).sqrt() if denoise == 1.0 else sigmas[0])
    momentum = None
    for i in range(steps):
        denoised, momentum = reference_sld(model, x, sigmas[i], CONDS, CFG, ACTIVE, momentum, i)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])

    assert close([out["samples"]], [x / scale])
    assert out["extra"] == "kept" and latent["samples"] is samples
    assert comfy.utils.bars[-1].updates == [(i + 1, steps) for i in range(steps)]  # the preview/progress callback


def test_ksample_native_with_sld_off_is_comfyuis_own_ksampler_bitwise(comfy, patcher):
    latent = {"samples": torch.zeros(1, 4, 4, 4)}
    out = comfy.bridge.ksample_native(patcher, 3, 4, CFG, "heun", "exponential", POSITIVE, NEGATIVE, latent,
                                      1.0, SAFETY, PRESETS["disabled"])
    sigmas = comfy.samplers.KSampler(patcher, 4, torch.device("cpu"), "heun", "exponential", 1.0).sigmas
    noise = comfy.sample.prepare_noise(latent["samples"], 3)
    expected = cfg_guider(comfy, patcher).sample(noise, latent["samples"], comfy.samplers.sampler_object("heun"),
                                                 sigmas, seed=3)
    assert torch.equal(out["samples"], expected)


def test_sld_ksampler_node_samples_a_comfyui_model_through_the_bridge(comfy, patcher):
    from comfyui_sld.nodes.sampling import SLDKSampler, sampler_lists

    assert sampler_lists() == (comfy.samplers.KSampler.SAMPLERS, comfy.samplers.KSampler.SCHEDULERS)
    latent = {"samples": torch.zeros(1, 4, 4, 4)}
    custom = (ACTIVE.guidance_scale, ACTIVE.warmup_steps, ACTIVE.threshold, ACTIVE.momentum_scale, ACTIVE.momentum_beta)
    (out,) = SLDKSampler().sample(patcher, 11, 3, CFG, "heun", "karras", POSITIVE, NEGATIVE, latent, 1.0, SAFETY,
                                  "custom", *custom)
    expected = comfy.bridge.ksample_native(patcher, 11, 3, CFG, "heun", "karras", POSITIVE, NEGATIVE, latent, 1.0,
                                           SAFETY, ACTIVE)
    assert torch.equal(out["samples"], expected["samples"])


def test_sld_guider_node_builds_the_guider_of_its_inputs(comfy, patcher):
    from comfyui_sld.nodes.custom_sampling import SLDGuider
    from comfyui_sld.nodes.sld_inputs import sld_inputs

    node = SLDGuider()
    required = node.INPUT_TYPES()["required"]
    assert list(required) == ["model", "positive", "negative", "cfg", *sld_inputs()]
    custom = (1500.0, 1, 0.02, 0.25, 0.5)

    (off,) = node.get_guider(patcher, POSITIVE, NEGATIVE, CFG, SAFETY, "disabled", *custom)
    assert type(off) is comfy.samplers.CFGGuider and off.cfg == CFG
    (strong,) = node.get_guider(patcher, POSITIVE, NEGATIVE, CFG, SAFETY, "strong", *custom)
    assert isinstance(strong, comfy.bridge.SLDComfyGuider) and strong.params == PRESETS["strong"]
    (mine,) = node.get_guider(patcher, POSITIVE, NEGATIVE, CFG, SAFETY, "custom", *custom)
    assert mine.params == SLDParams(*custom) and mine.cfg == CFG

    # The guider the node returns samples as the one make_guider builds from the same values.
    sigmas = schedule(comfy, patcher, steps=3)
    expected = run_recorded(comfy, comfy.bridge.make_guider(patcher, *CONDS, CFG, SLDParams(*custom)), sigmas)
    actual = run_recorded(comfy, mine, sigmas)
    assert all(torch.equal(a[2], e[2]) for a, e in zip(actual, expected, strict=True))


@pytest.mark.skipif(not COMFYUI_DIR, reason="needs a real ComfyUI: set SLD_COMFYUI_DIR (and SLD_COMFYUI_PYTHON)")
def test_the_stand_in_agrees_with_a_real_comfyui():
    python = os.environ.get("SLD_COMFYUI_PYTHON", sys.executable)
    done = subprocess.run([python, str(STANDIN / "agreement.py"), COMFYUI_DIR], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
