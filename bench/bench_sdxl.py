"""Benchmark: SDXL, the whole job (encode, sample, decode), in one run: our SDXL with SLD disabled
against diffusers' StableDiffusionXLPipeline (target ≤ 0.95), and our SLD (Medium) against our own
CFG (target ≤ 1.55).

One full-size SDXL single file feeds both sides: ours loads it with `load_checkpoint` and diffusers'
pipeline is built over the very same modules (on CUDA, where ours runs the UNet channels-last, over a
second load kept in NCHW). Same prompt, negative prompt, seed's noise, steps, Euler (euler/normal ≡
EulerDiscreteScheduler linspace), size and size conditioning (CLIPTextEncode's defaults: the image
size, no crop, ≡ the pipeline's). Each repetition runs diffusers, ours with SLD disabled, then ours
with SLD, so drift of the machine hits every side; ratios are taken within a repetition and
summarised as median (min–max).

    python bench/bench_sdxl.py [--checkpoint FILE] [--device cpu|cuda] [--size 256] [--steps 20]
        [--preset medium] [--reps 3] [--precision auto|fp32|fp16|bf16]

Without --checkpoint it uses the seeded random full-size SDXL that scripts/make_random_sdxl.py writes
(about 6.9 GB, cached under ~/.cache/comfyui-sld, made on first use). On a CPU, float32 SDXL takes about
14 GiB of memory.
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import torch

from harness import NEGATIVE, PROMPT, SEED, emit, fmt_spread, machine_line, run_ours, spread, timed
from comfyui_sld.sld_core.device import PRECISIONS, precision_dtype
from comfyui_sld.sld_core.guidance import PRESETS

REPO = Path(__file__).resolve().parents[1]
CFG = 7.5  # run_ours' scale
TARGETS = {"sdxl_vs_diffusers": 0.95, "sdxl_sld_vs_cfg": 1.55}


def default_checkpoint():
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "comfyui-sld"
    path = cache / "sdxl_random_seed0.safetensors"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"building {path} (random SDXL base, ~6.9 GB) ...", flush=True)
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_random_sdxl.py"), str(path)], check=True)
    return path


def sdxl_pipeline(model, clip, vae):
    """diffusers' StableDiffusionXLPipeline over our loaded modules, Euler as ComfyUI's euler/normal."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline
    from transformers import CLIPTokenizer

    from comfyui_sld.sld_core.models.clip import TOKENIZER_DIR

    schedule = model.schedule
    scheduler = EulerDiscreteScheduler(beta_start=schedule.beta_start, beta_end=schedule.beta_end,
                                       beta_schedule="scaled_linear", timestep_spacing="linspace", steps_offset=1)
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(TOKENIZER_DIR), local_files_only=True, pad_token="!")
    pipe = StableDiffusionXLPipeline(
        vae=vae.autoencoder, text_encoder=clip.clip_l.text_encoder, text_encoder_2=clip.clip_g.text_encoder,
        tokenizer=clip.tokenizer, tokenizer_2=tokenizer_2, unet=model.unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_diffusers(pipe, model, size, steps):
    """The pipeline's whole job from our seed's noise; returns (images [1, H, W, 3], final latent)."""
    from comfyui_sld.sld_core.noise import prepare_noise

    final = {}

    def on_step_end(pipe, i, t, kwargs):
        final["latents"] = kwargs["latents"]
        return kwargs

    pipe.scheduler.set_timesteps(steps)
    # ComfyUI's x_T is noise·√(1+σ_max²); the pipeline multiplies what it is given by init_noise_sigma.
    sigma_max = float(model.schedule.sigma_max)
    noise = prepare_noise(torch.zeros(1, 4, size // 8, size // 8), SEED) * (1 + sigma_max**2) ** 0.5
    latents = (noise / pipe.scheduler.init_noise_sigma).to(pipe.unet.device, pipe.unet.dtype)
    images = pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=steps,
                  guidance_scale=CFG, latents=latents, output_type="np", callback_on_step_end=on_step_end).images
    return images, final["latents"].float().cpu()


def load(path, device, dtype):
    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    model, clip, vae = load_checkpoint(path, device=device, dtype=dtype)
    if model.execution.channels_last:  # diffusers runs its UNet as users do: its own copy, NCHW
        theirs = load_checkpoint(path, device=device, dtype=dtype)
        theirs[0].unet.to(memory_format=torch.contiguous_format)
    else:
        theirs = (model, clip, vae)
    return (model, clip, vae), sdxl_pipeline(*theirs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, help="an SDXL single file (default: the random full-size one)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", default="medium", choices=[p for p in PRESETS if p != "disabled"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="both sides; auto = fp16 on CUDA, fp32 on CPU")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = precision_dtype(args.precision, device)
    path = args.checkpoint or default_checkpoint()
    (model, clip, vae), pipe = load(path, device, dtype)
    if model.family != "SDXL":
        parser.error(f"{path} is an {model.family} checkpoint, not SDXL base")
    params = PRESETS[args.preset]

    def ours(p, steps=args.steps):
        return timed(lambda: run_ours(model, clip, vae, p, args.size, steps), device)

    def theirs(steps=args.steps):
        return timed(lambda: run_diffusers(pipe, model, args.size, steps), device)

    # Warm-up: every shape each side will see (batch 2 without the safety pass, 3 with it).
    warm = {"diffusers": theirs(1)[0], "ours": ours(PRESETS["max"], 1)[0] + ours(None, 1)[0]}
    print("warm-up (s): " + ", ".join(f"{k} {v:.1f}" for k, v in warm.items()), flush=True)

    times = {"diffusers": [], "cfg": [], "sld": []}
    for rep in range(args.reps):
        seconds, (their_image, their_latent) = theirs()
        times["diffusers"].append(seconds)
        seconds, (our_image, our_latent) = ours(None)
        times["cfg"].append(seconds)
        times["sld"].append(ours(params)[0])
        print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items()), flush=True)

    print(f"\n{machine_line(device)}")
    print(f"SDXL {path.name}, {args.size}×{args.size}, {args.steps} steps, {dtype}, {args.reps} reps")
    # Same output, not just the same work (expect ~1e-3 or less: tokenizer padding and float order differ).
    latent_rel = float((our_latent - their_latent).norm() / their_latent.norm())
    rows = {"sdxl_vs_diffusers": ("ours, SLD disabled / diffusers' StableDiffusionXLPipeline", "cfg", "diffusers"),
            "sdxl_sld_vs_cfg": (f"ours, SLD {args.preset} / ours, CFG", "sld", "cfg")}
    for name, (label, mine, base) in rows.items():
        ratios = [a / b for a, b in zip(times[mine], times[base])]
        verdict = "met" if spread(ratios)[1] <= TARGETS[name] else "NOT met"
        print(f"{label}: {fmt_spread(ratios)} (target ≤ {TARGETS[name]}: {verdict}); {mine} {fmt_spread(times[mine])} s, "
              f"{base} {fmt_spread(times[base])} s")
        emit(dict(bench=name, device=device.type, dtype=str(dtype), size=args.size, steps=args.steps,
                  preset=args.preset, checkpoint=path.name, ratio=spread(ratios), target=TARGETS[name],
                  latent_rel_l2=latent_rel if name == "sdxl_vs_diffusers" else None))
    diff = abs(our_image - their_image) * 255
    print(f"final latent rel. L2 (SLD disabled vs diffusers) {latent_rel:.2e}; image |Δ| mean {diff.mean():.3f}/255, "
          f"max {diff.max():.2f}/255")


if __name__ == "__main__":
    main()
