"""Model sampling: ε and v-prediction and zero-terminal-SNR, as ComfyUI's ModelSamplingDiscrete defines
them; what SLD gets from a v model is ε = (x − x̂₀)/σ.

Oracles: diffusers' schedulers (``get_velocity`` defines v, ``add_noise`` the UNet's input,
``rescale_zero_terminal_snr`` the rescaled schedule) and closed-form algebra.
"""
import pytest
import torch

from comfyui_sld.sld_core.model_sampling import ZSNR_LAST_ALPHA_BAR, DiscreteSchedule
from comfyui_sld.sld_core.models.model import Model


@pytest.fixture(scope="module")
def ddpm():
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


@pytest.mark.parametrize("t", [0, 17, 250, 999])
def test_v_output_gives_back_x0_and_eps(ddpm, t):
    gen = torch.Generator().manual_seed(t)
    x0, noise = torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64), torch.randn(2, 4, 8, 8, generator=gen, dtype=torch.float64)
    timesteps = torch.tensor([t, t])
    v = ddpm.get_velocity(x0, noise, timesteps)
    schedule = DiscreteSchedule(prediction_type="v_prediction")
    sigma = schedule.sigmas[[t, t]].double()
    x = x0 + sigma.view(-1, 1, 1, 1) * noise  # k-diffusion's x; the UNet sees x/√(σ²+1)
    torch.testing.assert_close(x / (sigma.view(-1, 1, 1, 1) ** 2 + 1) ** 0.5, ddpm.add_noise(x0, noise, timesteps),
                               atol=1e-6, rtol=1e-6)  # σ table stored in float32, as ComfyUI stores it
    torch.testing.assert_close(schedule.denoised(x, sigma, v), x0, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(schedule.eps(x, sigma, v), noise, atol=1e-6, rtol=1e-6)


def test_epsilon_output_is_eps_and_x0_is_x_minus_sigma_eps():
    schedule = DiscreteSchedule()
    x, out, sigma = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0.1, 1.0, 14.6])
    assert schedule.eps(x, sigma, out) is out  # SD1 keeps its exact path
    torch.testing.assert_close(schedule.denoised(x, sigma, out), x - out * sigma.view(-1, 1, 1, 1), atol=0, rtol=0)


def test_zero_terminal_snr_matches_diffusers_and_comfyuis_last_step():
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1 - rescale_zero_terminal_snr(betas), 0)
    assert alphas_cumprod[-1] == 0  # diffusers' exact zero: σ_max would be infinite
    reference = ((1 - alphas_cumprod[:-1]) / alphas_cumprod[:-1]) ** 0.5
    schedule = DiscreteSchedule(prediction_type="v_prediction", zsnr=True)
    torch.testing.assert_close(schedule.sigmas[:-1].double(), reference, atol=0, rtol=1e-6)
    assert schedule.sigma_max == pytest.approx(((1 - ZSNR_LAST_ALPHA_BAR) / ZSNR_LAST_ALPHA_BAR) ** 0.5, rel=1e-6)
    assert 4500 < float(schedule.sigma_max) < 4530
    assert schedule.sigma_min == pytest.approx(float(DiscreteSchedule().sigma_min), rel=1e-6)  # first step unchanged


def test_prediction_names_and_with_sampling():
    assert DiscreteSchedule(prediction_type="eps").prediction_type == "epsilon"  # ComfyUI's node value
    with pytest.raises(ValueError, match="unknown prediction type"):
        DiscreteSchedule(prediction_type="x0")
    base = DiscreteSchedule()
    v = base.with_sampling("v_prediction", zsnr=True)
    assert (v.prediction_type, v.zsnr, base.prediction_type, base.zsnr) == ("v_prediction", True, "epsilon", False)
    assert torch.equal(base.with_sampling("epsilon").sigmas, base.sigmas)


def test_a_v_model_gives_sld_the_eps_its_x0_implies(tiny_components):
    """Model.predict_eps of a v model = (x − denoise(x))/σ, and = the closed form from the raw UNet output."""
    unet = tiny_components["unet"]
    eps_model = Model(unet)
    v_model = eps_model.with_sampling("v_prediction")
    assert eps_model.prediction_type == "epsilon" and v_model.prediction_type == "v_prediction"
    assert v_model.unet is unet and Model(unet, prediction_type="v_prediction").prediction_type == "v_prediction"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=gen) * 3
    sigma = torch.tensor([2.5, 0.3])
    context = torch.randn(2, 77, 32, generator=gen)
    raw = eps_model.predict_eps(x, sigma, context)  # an ε model passes the output through
    s = sigma.view(-1, 1, 1, 1)
    eps = v_model.predict_eps(x, sigma, context)
    denoised = v_model.denoise(x, sigma, context)
    torch.testing.assert_close(eps, (x - denoised) / s, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(denoised, x / (s**2 + 1) - raw * s / (s**2 + 1) ** 0.5, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(eps, raw, atol=1e-2)  # the reading of the output does change


# --- the headless ModelSamplingDiscrete node -------------------------------------------------------

def test_model_sampling_discrete_node_overrides_the_prediction_type(tiny_components):
    from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS, NODE_CLASS_MAPPINGS
    from comfyui_sld.nodes.errors import NodeInputError

    node = HEADLESS_NODE_CLASS_MAPPINGS["ModelSamplingDiscrete"]
    assert "ModelSamplingDiscrete" not in NODE_CLASS_MAPPINGS  # inside ComfyUI its own node is used
    # ComfyUI's inputs, so one workflow file validates in both places
    assert node.INPUT_TYPES()["required"] == {
        "model": ("MODEL",), "sampling": (["eps", "v_prediction", "lcm", "x0", "img_to_img"],),
        "zsnr": ("BOOLEAN", {"default": False})}
    model = Model(tiny_components["unet"])
    (v_model,) = node().patch(model, "v_prediction", True)
    assert (v_model.prediction_type, v_model.schedule.zsnr) == ("v_prediction", True)
    assert model.prediction_type == "epsilon" and v_model.unet is model.unet
    (back,) = node().patch(v_model, "eps", False)
    assert back.prediction_type == "epsilon" and torch.equal(back.schedule.sigmas, model.schedule.sigmas)
    with pytest.raises(NodeInputError, match="'lcm' sampling is not supported headless"):
        node().patch(model, "lcm", False)
