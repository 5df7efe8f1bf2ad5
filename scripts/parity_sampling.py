"""Node parity for the composable sampling nodes (area "sampling" of `comfyui-check --node-parity`):
KSamplerAdvanced, SamplerCustom(Advanced), the sampler/scheduler/noise/guider blocks and SLDGuider."""
from comfyui_check_graphs import _decode_save, node_adder, prepare_prompt

FAMILY = "sd15"


def node_parity_prompt(base_prompt, ckpt_name, steps):
    """sld_txt2img's loader, texts and latent feeding one branch per composable sampling node, each
    decoded and saved under the names of the nodes it checks; run by ComfyUI and by `sld run` and
    compared image by image. ``steps`` (at least 2) is every branch's step count."""
    steps = max(int(steps or 2), 2)
    p = prepare_prompt(base_prompt, ckpt_name, steps)
    for node_id in ("6", "7", "8"):  # the sampler, decode and save: the branches replace them
        p.pop(node_id)
    model, pos, neg, concept, latent = ["1", 0], ["2", 0], ["3", 0], ["4", 0], ["5", 0]
    ksampler = {"model": model, "noise_seed": 11, "steps": steps, "cfg": 7.0, "sampler_name": "euler",
                "scheduler": "normal", "positive": pos, "negative": neg}

    node = node_adder(p)

    def save(nid, source, prefix):
        _decode_save(p, nid, source[0], ["1", 2], prefix)
        p[f"{nid}d"]["inputs"]["samples"] = source

    first = node("ka1", "KSamplerAdvanced", **ksampler, add_noise="enable", latent_image=latent, start_at_step=0,
                 end_at_step=1, return_with_leftover_noise="enable")
    rest = node("ka2", "KSamplerAdvanced", **ksampler, add_noise="disable", latent_image=first, start_at_step=1,
                end_at_step=10000, return_with_leftover_noise="disable")
    save("ka", rest, "node_KSamplerAdvanced_split")

    euler = node("sel", "KSamplerSelect", sampler_name="euler")
    heun = node("selh", "KSamplerSelect", sampler_name="heun")
    karras = node("karras", "KarrasScheduler", steps=steps, sigma_max=14.614642, sigma_min=0.0291675, rho=7.0)
    node("sc", "SamplerCustom", model=model, add_noise=True, noise_seed=12, cfg=7.0, positive=pos, negative=neg,
         sampler=heun, sigmas=karras, latent_image=latent)
    save("sco", ["sc", 0], "node_SamplerCustom_KarrasScheduler_heun")
    save("scd", ["sc", 1], "node_SamplerCustom_denoised_output")

    noise = node("noise", "RandomNoise", noise_seed=13)
    basic = node("basic", "BasicGuider", model=model, conditioning=pos)
    turbo = node("turbo", "SDTurboScheduler", model=model, steps=steps, denoise=1.0)
    node("bg", "SamplerCustomAdvanced", noise=noise, guider=basic, sampler=euler, sigmas=turbo, latent_image=latent)
    save("bgs", ["bg", 0], "node_BasicGuider_SDTurboScheduler")

    cfg = node("cfg", "CFGGuider", model=model, positive=pos, negative=neg, cfg=7.0)
    sigmas = node("bs", "BasicScheduler", model=model, scheduler="karras", steps=steps + 1, denoise=1.0)
    node("split", "SplitSigmas", sigmas=sigmas, step=1)
    high = node("hi", "SamplerCustomAdvanced", noise=noise, guider=cfg, sampler=euler, sigmas=["split", 0],
                latent_image=latent)
    quiet = node("quiet", "DisableNoise")
    node("lo", "SamplerCustomAdvanced", noise=quiet, guider=cfg, sampler=euler, sigmas=["split", 1], latent_image=high)
    save("split", ["lo", 0], "node_SplitSigmas_DisableNoise_CFGGuider")

    sld = node("sldg", "SLDGuider", model=model, positive=pos, negative=neg, cfg=7.0, safety_concept=concept,
               sld_preset="max", sld_guidance_scale=5000.0, sld_warmup_steps=0, sld_threshold=1.0,
               sld_momentum_scale=0.5, sld_momentum_beta=0.7)
    node("sldr", "SamplerCustomAdvanced", noise=noise, guider=sld, sampler=euler, sigmas=sigmas, latent_image=latent)
    save("sld", ["sldr", 0], "node_SLDGuider_max")
    return p
