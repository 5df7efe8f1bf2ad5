"""Benchmark: our SLD sampler against diffusers' StableDiffusionPipelineSafe, side by side in one run.

Same seeded random-weight SD1.5-sized components (UNet 860 M, VAE, CLIP-L text encoder) shared by both
sides, same prompt, seed, steps, scheduler (euler/normal ≡ EulerDiscreteScheduler linspace), preset and
resolution. Both sides do the whole job: encode prompt, negative prompt and safety concept, sample,
decode with the VAE. Runs alternate (ours, theirs, ours, ...) after one short warm-up each, so drift of
the machine hits both. Prints per-pair ratios and their median; ratio < 1 means we are faster.

    python bench/bench_sld_vs_diffusers.py [--size 256] [--steps 10] [--preset medium] [--pairs 3]
"""
import argparse
import json
import statistics
import time
from importlib import resources

import torch
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipelineSafe, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from comfyui_sld.sld_core.guidance import DEFAULT_SAFETY_CONCEPT, PRESETS
from comfyui_sld.sld_core.ksample import ksample
from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.models.vae import Vae

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry"
SEED = 42


def sd15_config(name):
    text = resources.files("comfyui_sld.sld_core.models").joinpath("configs", f"sd15_{name}.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_") and k != "architectures"}


def build_sd15_components(seed=0):
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd15_config("unet")).eval()
    vae = AutoencoderKL(**sd15_config("vae")).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(**sd15_config("text_encoder"))).eval()
    return unet, vae, text_encoder


def run_ours(model, clip, vae, params, size, steps):
    positive, negative, concept = clip.encode(PROMPT), clip.encode(NEGATIVE), clip.encode(DEFAULT_SAFETY_CONCEPT)
    latent = {"samples": torch.zeros(1, 4, size // 8, size // 8)}
    out = ksample(model, SEED, steps, 7.5, "euler", "normal", positive, negative, latent,
                  safety_concept=concept, sld_params=params, disable_pbar=True)
    return vae.decode(out["samples"])


def run_diffusers(pipe, params, size, steps):
    generator = torch.Generator().manual_seed(SEED)
    return pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=steps,
                guidance_scale=7.5, generator=generator, output_type="np",
                sld_guidance_scale=params.guidance_scale, sld_warmup_steps=params.warmup_steps,
                sld_threshold=params.threshold, sld_momentum_scale=params.momentum_scale,
                sld_mom_beta=params.momentum_beta).images


def timed(fn):
    start = time.perf_counter()
    with torch.inference_mode():
        result = fn()
    return time.perf_counter() - start, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--preset", default="medium", choices=[p for p in PRESETS if p != "disabled"])
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    params = PRESETS[args.preset]

    unet, vae_module, text_encoder = build_sd15_components()
    tokenizer = load_clip_tokenizer()
    model, clip, vae = Model(unet), Clip(tokenizer, text_encoder), Vae(vae_module)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="linspace", steps_offset=1)
    pipe = StableDiffusionPipelineSafe(vae=vae_module, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    timed(lambda: run_ours(model, clip, vae, params, args.size, 1))  # warm-up: allocator, kernels, caches
    timed(lambda: run_diffusers(pipe, params, args.size, 1))
    ratios = []
    for pair in range(args.pairs):
        ours, our_image = timed(lambda: run_ours(model, clip, vae, params, args.size, args.steps))
        theirs, their_image = timed(lambda: run_diffusers(pipe, params, args.size, args.steps))
        ratios.append(ours / theirs)
        print(f"pair {pair}: ours {ours:.2f} s, diffusers {theirs:.2f} s, ratio {ours / theirs:.3f}", flush=True)
    # Same output, not just the same work: diffusers starts from noise·σ_max where ComfyUI uses
    # noise·√(1+σ_max²) (0.23 % amplitude), so expect a small, not a zero, difference.
    difference = (our_image.numpy() - their_image).__abs__() * 255
    print(f"image difference ours vs diffusers: max {difference.max():.2f}/255, mean {difference.mean():.3f}/255")
    print(f"SLD {args.preset}, {args.size}x{args.size}, {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads: ours/diffusers median {statistics.median(ratios):.3f} "
          f"(min {min(ratios):.3f}, max {max(ratios):.3f})")


if __name__ == "__main__":
    main()
