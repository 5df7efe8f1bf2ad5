"""Benchmark: our SLD sampler against diffusers' StableDiffusionPipelineSafe, and against our own CFG.

Same seeded random-weight SD1.5-sized components on both sides (UNet 860 M, VAE, CLIP-L text
encoder), same prompt, seed, steps, scheduler (euler/normal ≡ EulerDiscreteScheduler linspace),
preset, resolution and batch. Both sides do the whole job: encode prompt, negative prompt and safety
concept, sample, decode with the VAE. After warm-up, each repetition runs diffusers, then each of our
execution variants with SLD, then our default variant with plain CFG, so drift of the machine hits
every side; ratios are taken within a repetition and summarised as median (min–max).

Variants of ours (`sld_core.acceleration`): ``default`` = the device's defaults (CPU: eager NCHW;
CUDA: channels-last + CUDA graphs), ``eager`` = plain eager NCHW, ``compile`` = default + torch.compile.

    python bench/bench_sld_vs_diffusers.py [--device cpu|cuda] [--size 256] [--steps 20]
        [--preset medium] [--reps 5] [--batch 1] [--variants default,compile] [--precision fp32|fp16|bf16]
        [--unet-floor]

``--unet-floor`` also prints steps × one UNet call at the run's batch for each variant, as a fraction of
diffusers' run: the ratio no sampler can beat without a faster UNet call or less UNet work.
"""
import argparse
import copy
import statistics

import torch

from harness import (
    DiffusersWorker, add_allocator_arg, apply_allocator, execution_options,
    build_sd15_components, emit, fmt_spread, machine_line, run_diffusers, run_ours, safe_pipeline, spread, timed,
)
from comfyui_sld.sld_core.device import PRECISIONS, precision_dtype, vae_dtype
from comfyui_sld.sld_core.guidance import PRESETS
from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
from comfyui_sld.sld_core.models.model import Model
from comfyui_sld.sld_core.models.vae import Vae

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--preset", default="medium", choices=[p for p in PRESETS if p != "disabled"])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--variants", default="default")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="ours; auto = fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--diffusers-precision", choices=PRECISIONS, default="auto", help="auto = fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--no-cfg", action="store_true", help="skip the SLD/CFG row")
    parser.add_argument("--unet-floor", action="store_true",
                        help="also time one UNet call per variant at the run's UNet batch: steps × that call is the "
                             "time no sampler can beat without less UNet work")
    parser.add_argument("--diffusers-process", action="store_true",
                        help="run diffusers in its own process (untouched by --allocator tuned); runs still alternate")
    add_allocator_arg(parser)
    args = parser.parse_args()
    apply_allocator(args)
    device = torch.device(args.device)
    ours_dtype, their_dtype = precision_dtype(args.precision, device), precision_dtype(args.diffusers_precision, device)
    params = PRESETS[args.preset]
    variants = args.variants.split(",")

    unet, vae_module, text_encoder = build_sd15_components()
    tokenizer = load_clip_tokenizer()
    # diffusers runs its modules as users run them (NCHW, one dtype, VAE included); ours get their own
    # copies where the execution options change a module in place (channels-last) or the dtype differs.
    theirs = [m.to(device, their_dtype) for m in (unet, vae_module, text_encoder)]
    if args.diffusers_process:
        worker = DiffusersWorker(device, their_dtype)
        run_theirs = worker.run
    else:
        pipe = safe_pipeline(theirs[0], theirs[1], theirs[2], tokenizer)
        run_theirs = lambda p, size, steps, batch: timed(lambda: run_diffusers(pipe, p, size, steps, batch), device)  # noqa: E731
    shared = ours_dtype == their_dtype
    our_text = text_encoder if shared else copy.deepcopy(text_encoder).to(ours_dtype)
    our_vae = copy.deepcopy(vae_module).to(device, vae_dtype(device, ours_dtype))
    clip, vae = Clip(tokenizer, our_text), Vae(our_vae)
    models, unets = {}, {}  # one UNet per memory layout
    for variant in variants:
        options = execution_options(variant, device)
        layout = options.channels_last
        if layout not in unets:
            unets[layout] = copy.deepcopy(theirs[0]).to(ours_dtype) if layout or not shared else theirs[0]
        models[variant] = Model(unets[layout]).set_execution(options)

    # Warm-up: every shape each side will see (batch 2 during a skipped safety pass, batch 3 with it):
    # kernels, allocator, CUDA graphs and compilation stay out of the timings.
    warm = {}
    for variant, model in models.items():
        warm[variant] = timed(lambda: [run_ours(model, clip, vae, p, args.size, 1, args.batch)
                                       for p in (PRESETS["max"], params, None)], device)[0]
    warm["diffusers"] = run_theirs(PRESETS["max"], args.size, 1, args.batch)[0]
    print("warm-up (s): " + ", ".join(f"{k} {v:.1f}" for k, v in warm.items()), flush=True)

    times = {name: [] for name in ["diffusers", *variants, "cfg"]}
    cfg_variant = "default" if "default" in variants else variants[0]
    outputs = {}
    for rep in range(args.reps):
        seconds, outputs["diffusers"] = run_theirs(params, args.size, args.steps, args.batch)
        times["diffusers"].append(seconds)
        for variant, model in models.items():
            seconds, outputs[variant] = timed(lambda: run_ours(model, clip, vae, params, args.size, args.steps, args.batch), device)
            times[variant].append(seconds)
        if not args.no_cfg:
            times["cfg"].append(timed(lambda: run_ours(models[cfg_variant], clip, vae, None, args.size, args.steps, args.batch), device)[0])
        print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items() if v), flush=True)
    if args.diffusers_process:
        worker.close()

    print(f"\n{machine_line(device)}")
    print(f"SLD {args.preset}, {args.size}×{args.size}, {args.steps} steps, batch {args.batch}, ours {ours_dtype}, "
          f"diffusers {their_dtype}, {args.reps} reps")
    their_image, their_latent = outputs["diffusers"]
    for variant in variants:
        ratios = [o / t for o, t in zip(times[variant], times["diffusers"])]
        our_image, our_latent = outputs[variant]
        # Same output, not just the same work. The latents carry the sampling difference alone (the VAE
        # dtype differs on CUDA: ours bfloat16, diffusers float16). Expect a small, non-zero difference:
        # diffusers starts from noise·σ_max where ComfyUI uses noise·√(1+σ_max²) (0.23 % amplitude).
        latent_rel = float((our_latent - their_latent).norm() / their_latent.norm())
        diff = abs(our_image - their_image) * 255
        print(f"ours[{variant}] / diffusers: {fmt_spread(ratios)}; ours {fmt_spread(times[variant])} s, "
              f"diffusers {fmt_spread(times['diffusers'])} s; final latent rel. L2 {latent_rel:.2e}; "
              f"image |Δ| mean {diff.mean():.3f}/255, max {diff.max():.2f}/255")
        emit(dict(bench="sld_vs_diffusers", device=device.type, preset=args.preset, size=args.size, steps=args.steps,
                  batch=args.batch, variant=variant, ours_dtype=str(ours_dtype), diffusers_dtype=str(their_dtype),
                  ratio=spread(ratios), ours_s=spread(times[variant]), diffusers_s=spread(times["diffusers"]),
                  latent_rel_l2=latent_rel, image_mad=float(diff.mean()), image_max=float(diff.max())))
    if args.unet_floor:
        print_unet_floor(models, args, device, ours_dtype, statistics.median(times["diffusers"]))
    if times["cfg"]:
        ratios = [s / c for s, c in zip(times[cfg_variant], times["cfg"])]
        print(f"ours SLD / ours CFG [{cfg_variant}]: {fmt_spread(ratios)}; CFG {fmt_spread(times['cfg'])} s")
        emit(dict(bench="sld_vs_cfg", device=device.type, preset=args.preset, size=args.size, steps=args.steps,
                  batch=args.batch, variant=cfg_variant, ratio=spread(ratios), cfg_s=spread(times["cfg"])))


def print_unet_floor(models, args, device, dtype, diffusers_median):
    """steps × one UNet call at 3 rows per image (the safety pass at every step, as Medium, Strong and Max
    run; Weak skips it in its warm-up, so its floor is lower), per variant, against diffusers' whole run:
    where that is already near the ratio, only a faster UNet call or less UNet work can go further."""
    rows = 3 * args.batch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, args.size // 8, args.size // 8, generator=g).to(device)
    sigma = torch.full((rows,), 3.0, device=device)
    context = torch.randn(rows, 77, 768, generator=g).to(device, dtype)
    for variant, model in models.items():
        timed(lambda: [model.predict_eps(x, sigma, context) for _ in range(3)], device)
        per_call = statistics.median(
            timed(lambda: [model.predict_eps(x, sigma, context) for _ in range(10)], device)[0] / 10 for _ in range(5))
        floor = args.steps * per_call
        print(f"UNet floor [{variant}]: {args.steps} × {per_call * 1e3:.2f} ms (batch {rows}) = {floor:.3f} s "
              f"= {floor / diffusers_median:.3f} of diffusers' median run")
        emit(dict(bench="unet_floor", device=device.type, size=args.size, steps=args.steps, batch=args.batch,
                  variant=variant, unet_ms=per_call * 1e3, floor_s=floor, floor_vs_diffusers=floor / diffusers_median))


if __name__ == "__main__":
    main()
