"""Does the stand-in behave as the real ComfyUI does? Run with a ComfyUI's Python:

    python tests/comfy_standin/agreement.py /path/to/ComfyUI

(tests/test_comfy_bridge.py runs it when SLD_COMFYUI_DIR is set.) Each check feeds the same inputs to
ComfyUI's function and to the stand-in's and compares the results: the keys the CFG hooks receive and
what they return, the cfg=1 skip, sigmas for every stand-in scheduler and denoise, the seed's noise,
the empty-latent fix, the samplers with their guider call pattern and callback, `inner_sample`
(latent scaling, `sample_sigmas` as the very tensor sampled over), the model samplings (ε, v, flow:
σ tables, timesteps, noise scaling, x̂₀ from the output), how each conditioning becomes model inputs
(`encode_model_conds`: default sizes and prompt type) and SDXL's added input (`encode_adm`). Prints
one line per check; exits 1 on the first disagreement.
"""
import importlib
import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent


def load_standin():
    """The stand-in's modules under the package name `standin_comfy`, beside the real `comfy`."""
    spec = importlib.util.spec_from_file_location("standin_comfy", HERE / "comfy" / "__init__.py",
                                                  submodule_search_locations=[str(HERE / "comfy")])
    package = importlib.util.module_from_spec(spec)
    sys.modules["standin_comfy"] = package
    spec.loader.exec_module(package)
    return SimpleNamespace(**{m: importlib.import_module(f"standin_comfy.{m}")
                              for m in ("samplers", "sample", "model_base", "model_sampling")})


def load_comfyui(comfyui_dir):
    # Run as a script, this folder is sys.path[0], where `comfy` is the stand-in.
    sys.path[:] = [str(comfyui_dir)] + [p for p in sys.path if Path(p or ".").resolve() != HERE]
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv = [sys.argv[0], "--cpu"]  # model_management reads the command line when imported
    modules = ("comfy.samplers", "comfy.sample", "comfy.model_sampling", "comfy.model_base",
               "comfy.ldm.modules.diffusionmodules.openaimodel")
    return SimpleNamespace(**{m.split(".")[-1]: importlib.import_module(m) for m in modules})


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def check_cfg_hooks(real, standin):
    """Same hook keys, same combined result, on the same two predictions (real: through its
    `sampler_calc_cond_batch_function` option; stand-in: a model returning them from one call)."""
    x, sigma = randn(2, 4, 4, 4, seed=1), torch.full((2,), 3.0)
    cond_out, uncond_out = randn(2, 4, 4, 4, seed=2), randn(2, 4, 4, 4, seed=3)

    def apply_model(x, t, c_crossattn=None, **kwargs):  # the zero context is cond, the other uncond
        return torch.cat([cond_out if float(c.abs().sum()) == 0 else uncond_out for c in c_crossattn.split(2)])

    model = SimpleNamespace(apply_model=apply_model)
    cond, uncond = ([{"cross_attn": c, "model_conds": {"c_crossattn": c}}]  # as process_conds leaves them
                    for c in (torch.zeros(1, 77, 8), torch.ones(1, 77, 8)))
    results = {}
    for side, module in (("real", real.samplers), ("standin", standin.samplers)):
        for cfg in (7.5, 1.0):
            seen = {}

            def pre(args, seen=seen):
                seen["pre"], seen["uncond_skipped"] = set(args), args["conds"][1] is None
                return [args["conds_out"][0] * 2, args["conds_out"][1]]

            def post(args, seen=seen):
                seen["post"] = set(args)
                return args["denoised"] + 1

            options = {"sampler_pre_cfg_function": [pre], "sampler_post_cfg_function": [post]}
            if side == "real":
                options["sampler_calc_cond_batch_function"] = lambda args: [cond_out, uncond_out]
            out = module.sampling_function(model, x, sigma, uncond, cond, cfg, model_options=options)
            options["sampler_cfg_function"] = lambda args, seen=seen: seen.setdefault("cfg_fn", set(args)) and args["cond"]
            module.cfg_function(model, cond_out, uncond_out, cfg, x, sigma, model_options=options, cond=cond, uncond=uncond)
            results[side, cfg] = (out if cfg != 1.0 else None, seen)
    for cfg in (7.5, 1.0):
        (real_out, real_seen), (standin_out, standin_seen) = results["real", cfg], results["standin", cfg]
        assert real_seen == standin_seen, (cfg, real_seen, standin_seen)
        assert cfg == 1.0 or torch.equal(real_out, standin_out)
    assert results["real", 7.5][1]["pre"] == set(standin.samplers.PRE_CFG_KEYS)
    assert results["real", 7.5][1]["post"] == set(standin.samplers.POST_CFG_KEYS)


def check_sigmas(real, standin):
    sampling = SimpleNamespace(sigma_min=torch.tensor(0.0292), sigma_max=torch.tensor(14.6146))
    model = SimpleNamespace(get_model_object=lambda name: sampling)
    for sampler in standin.samplers.KSampler.SAMPLERS:
        for scheduler in standin.samplers.KSampler.SCHEDULERS:
            for steps in (1, 4, 20):
                for denoise in (None, 1.0, 0.6, 0.25, 0.0):
                    args = (model, steps, "cpu", sampler, scheduler, denoise)
                    expected, actual = real.samplers.KSampler(*args).sigmas, standin.samplers.KSampler(*args).sigmas
                    assert torch.equal(expected, actual), (args[1:], expected, actual)


def check_noise(real, standin):
    latent = torch.zeros(3, 4, 5, 6)
    for seed in (0, 7, 2**40):
        for indices in (None, [0, 1, 2], [2, 0, 2], [4]):
            shaped = latent[: len(indices)] if indices else latent
            assert torch.equal(real.sample.prepare_noise(shaped, seed, indices),
                               standin.sample.prepare_noise(shaped, seed, indices)), (seed, indices)


def check_empty_latent(real, standin):
    model = SimpleNamespace(get_model_object=lambda name: SimpleNamespace(latent_channels=4, latent_dimensions=2))
    for latent in (torch.zeros(2, 16, 4, 4), torch.zeros(2, 4, 4, 4), randn(2, 16, 4, 4, seed=4)):
        expected = real.sample.fix_empty_latent_channels(model, latent)
        assert torch.equal(expected, standin.sample.fix_empty_latent_channels(model, latent))


class ProbeGuider:
    """What a sampler calls: records each call's σ and returns the exact denoiser of N(0, I) data."""

    def __init__(self, model_sampling):
        self.inner_model = SimpleNamespace(model_sampling=model_sampling)
        self.calls = []

    def __call__(self, x, sigma, model_options=None, seed=None):
        self.calls.append((float(sigma[0]), id(model_options["transformer_options"].get("sample_sigmas"))))
        return x / (1 + sigma.view(-1, 1, 1, 1) ** 2)


KINDS = {"EPS": ("ModelSamplingDiscrete", "EPS"), "V_PREDICTION": ("ModelSamplingDiscrete", "V_PREDICTION"),
         "FLOW": ("ModelSamplingDiscreteFlow", "CONST")}


def samplings(real, standin, kind):
    """(ComfyUI's model_sampling of a model type, the stand-in's of the same kind)."""
    model_type = getattr(real.model_base.ModelType, kind)
    table, prediction = KINDS[kind]
    sampling = standin.model_sampling
    return (real.model_base.model_sampling(SimpleNamespace(sampling_settings={}), model_type),
            standin.model_base.make_sampling(getattr(sampling, table), getattr(sampling, prediction)))


def check_samplers(real, standin):
    """The samplers, the noise scaling of KSAMPLER.sample, the guider's call pattern and the callback."""
    full = standin.samplers.karras_sigmas(5, 0.0292, 14.6146)
    for name in standin.samplers.KSampler.SAMPLERS:
        for sigmas, latent in ((full, torch.zeros(1, 4, 4, 4)), (full[2:], randn(1, 4, 4, 4, seed=5))):
            runs = {}
            for side, module, sampling in zip(("real", "standin"), (real.samplers, standin.samplers),
                                              samplings(real, standin, "EPS")):
                guider, steps = ProbeGuider(sampling), []
                extra_args = {"model_options": {"transformer_options": {}}, "seed": 0}
                out = module.sampler_object(name).sample(
                    guider, sigmas, extra_args, lambda i, d, x, total: steps.append((i, d, x, total)),
                    randn(1, 4, 4, 4, seed=6), latent, None, True)
                runs[side] = (out, [s for s, _ in guider.calls], steps)
            (real_out, real_calls, real_steps), (out, calls, steps) = runs["real"], runs["standin"]
            assert real_calls == calls, (name, real_calls, calls)
            assert torch.allclose(real_out, out, rtol=1e-6, atol=1e-6), (name, (real_out - out).abs().max())
            assert [(i, t) for i, _, _, t in real_steps] == [(i, t) for i, _, _, t in steps]
            assert all(torch.allclose(a[1], b[1], atol=1e-6) and torch.allclose(a[2], b[2], atol=1e-6)
                       for a, b in zip(real_steps, steps))


def check_inner_sample(real, standin):
    """CFGGuider.inner_sample: the latent in and out of the model's space, and the sampler's guider
    calls carry the very sigmas tensor sampled over as transformer_options["sample_sigmas"]."""
    sigmas = standin.samplers.karras_sigmas(4, 0.0292, 14.6146)[1:]
    for latent in (torch.zeros(1, 4, 4, 4), randn(1, 4, 4, 4, seed=7)):
        runs = {}
        for side, module, sampling in zip(("real", "standin"), (real.samplers, standin.samplers),
                                          samplings(real, standin, "EPS")):
            guider = module.CFGGuider(SimpleNamespace(model_options={"transformer_options": {"keep": 1}}))
            probe = ProbeGuider(sampling)
            guider.predict_noise = lambda x, t, model_options={}, seed=None, probe=probe: probe(x, t, model_options)
            guider.inner_model = SimpleNamespace(model_sampling=sampling, process_latent_in=lambda l: l * 0.5,
                                                 process_latent_out=lambda l: l * 3.0)
            guider.conds = {}
            out = guider.inner_sample(randn(1, 4, 4, 4, seed=8), latent, "cpu", module.sampler_object("euler"),
                                      sigmas, None, None, True, 0)
            assert all(sigmas_id == id(sigmas) for _, sigmas_id in probe.calls), side
            assert "sample_sigmas" not in guider.model_options["transformer_options"], side  # a copy got them
            runs[side] = (out, [s for s, _ in probe.calls])
        assert runs["real"][1] == runs["standin"][1]
        assert torch.allclose(runs["real"][0], runs["standin"][0], rtol=1e-6, atol=1e-6)


def check_model_sampling(real, standin):
    """ε, v and flow samplings: σ table, timestep of a σ, model input, x̂₀ from an output, noise scaling."""
    x, output = randn(2, 4, 4, 4, seed=10), randn(2, 4, 4, 4, seed=11)
    for kind in KINDS:
        ours_real, ours = samplings(real, standin, kind)
        assert torch.equal(ours_real.sigmas, ours.sigmas), kind
        assert torch.equal(ours_real.sigma_max, ours.sigma_max) and torch.equal(ours_real.sigma_min, ours.sigma_min)
        for sigma in (ours.sigmas[[0, 500]], ours.sigmas[-1:] * 1.01, torch.tensor([0.5, 0.9])):
            sigma = sigma.float()
            assert torch.equal(ours_real.timestep(sigma), ours.timestep(sigma)), (kind, sigma)
            pairs = [(ours_real.calculate_input(sigma, x), ours.calculate_input(sigma, x)),
                     (ours_real.calculate_denoised(sigma, output, x), ours.calculate_denoised(sigma, output, x)),
                     (ours_real.inverse_noise_scaling(sigma, x), ours.inverse_noise_scaling(sigma, x))]
            for full in (True, False):
                pairs.append((ours_real.noise_scaling(sigma, output.clone(), x, full),
                              ours.noise_scaling(sigma, output.clone(), x, full)))
            assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in pairs), (kind, sigma)
        assert isinstance(ours_real, real.model_sampling.EPS) == isinstance(ours, standin.model_sampling.EPS)
        assert isinstance(ours_real, real.model_sampling.CONST) == isinstance(ours, standin.model_sampling.CONST)


def check_encode_model_conds(real, standin):
    """What a model's extra_conds receives for each entry (sizes default to the latent's ×8, the prompt
    type to the list's name) and that its outputs land in the entry's model_conds."""
    noise, seen = torch.zeros(1, 4, 5, 6), {}
    entries = [{"cross_attn": torch.zeros(1, 77, 8), "pooled_output": torch.ones(1, 3), "width": 1024,
                "crop_w": 8}, {"cross_attn": torch.ones(1, 77, 8), "prompt_type": "positive"}, {"cross_attn": None}]
    for side, module in (("real", real.samplers), ("standin", standin.samplers)):
        calls = seen[side] = []

        def extra_conds(calls=calls, **params):
            calls.append({k: v for k, v in params.items() if not isinstance(v, torch.Tensor) and k != "device"})
            return {"y": torch.full((1, 2), float(len(calls)))}

        conds = [dict(e, model_conds={}) for e in entries]
        out = module.encode_model_conds(extra_conds, conds, noise, "cpu", "safety_concept", seed=3)
        seen[side].append([sorted(entry["model_conds"]) for entry in out])
    assert seen["real"] == seen["standin"], seen


def check_sdxl_adm(real, standin):
    """SDXL's `y`: the pooled output, then the sinusoids of its six size numbers (defaults included)."""
    embedder = real.openaimodel.Timestep(256)
    ours_real = SimpleNamespace(embedder=embedder, noise_augmentor=None)
    ours = standin.model_base.SDXL(None)
    for sizes in ({"width": 1024, "height": 768}, dict(width=64, height=80, crop_w=8, crop_h=16, target_width=512,
                                                             target_height=640)):
        kwargs = {"pooled_output": randn(1, 12, seed=12), "device": "cpu", **sizes}
        expected = real.model_base.SDXL.encode_adm(ours_real, **kwargs)
        assert torch.allclose(expected, ours.encode_adm(**kwargs), rtol=1e-6, atol=1e-6), sizes


CHECKS = [check_cfg_hooks, check_sigmas, check_noise, check_empty_latent, check_samplers, check_inner_sample,
          check_model_sampling, check_encode_model_conds, check_sdxl_adm]


def main(comfyui_dir):
    standin, real = load_standin(), load_comfyui(comfyui_dir)
    for check in CHECKS:
        try:
            check(real, standin)
        except AssertionError as error:
            print(f"DISAGREE {check.__name__}: {error}")
            return 1
        print(f"agree {check.__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
