"""diffusers' side of `bench_one_shot.py`: one whole job in this process, as a diffusers user writes it.

Load the pipeline (`StableDiffusionPipelineSafe.from_pretrained` of a folder, or the plain pipeline's
`from_single_file` for a single file — the safe pipeline has no single-file loader — handed to the safe
pipeline), sample with SLD and Euler (linspace, ≡ our euler/normal), decode, save a PNG. The start
noise is ComfyUI's draw for the seed (a float32 CPU ``randn`` after ``torch.manual_seed``), written
here with torch alone so that this process imports nothing of ours.

    python bench/diffusers_one_shot.py --folder DIR | --single-file FILE --config DIR  --out PNG [options]
"""
import argparse


def main():
    parser = argparse.ArgumentParser()
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--folder")
    source.add_argument("--single-file")
    parser.add_argument("--config", help="a diffusers folder with the configs, for --single-file (offline)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--negative", default="")
    parser.add_argument("--concept", default=None, help="safety concept; default: the pipeline's")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--sld", type=float, nargs=5, required=True,
                        metavar=("SCALE", "WARMUP", "THRESHOLD", "MOMENTUM", "BETA"))
    args = parser.parse_args()

    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, StableDiffusionPipelineSafe

    options = dict(torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    if args.folder:
        pipe = StableDiffusionPipelineSafe.from_pretrained(args.folder, local_files_only=True, **options)
    else:
        plain = StableDiffusionPipeline.from_single_file(args.single_file, config=args.config, local_files_only=True,
                                                         **options)
        pipe = StableDiffusionPipelineSafe(vae=plain.vae, text_encoder=plain.text_encoder, tokenizer=plain.tokenizer,
                                           unet=plain.unet, scheduler=plain.scheduler, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, timestep_spacing="linspace")
    pipe.set_progress_bar_config(disable=True)
    if args.concept is not None:
        pipe.safety_concept = args.concept
    latent_size = args.size // pipe.vae_scale_factor
    noise = torch.randn([1, pipe.unet.config.in_channels, latent_size, latent_size], dtype=torch.float32,
                        generator=torch.manual_seed(args.seed), device="cpu")
    scale, warmup, threshold, momentum, beta = args.sld
    with torch.inference_mode():
        image = pipe(args.prompt, negative_prompt=args.negative, height=args.size, width=args.size,
                     num_inference_steps=args.steps, guidance_scale=args.cfg, latents=noise,
                     sld_guidance_scale=scale, sld_warmup_steps=int(warmup), sld_threshold=threshold,
                     sld_momentum_scale=momentum, sld_mom_beta=beta).images[0]
    image.save(args.out)


if __name__ == "__main__":
    main()
