"""Where a CUDA SLD run spends its time: the UNet and the VAE decode under each execution choice.

Times each part alone with CUDA events (median of `--reps` after warm-up), so a pipeline-level
difference can be traced to the part that makes it:
- UNet at batch 3·B (an SLD evaluation) and 2·B (CFG): called as diffusers calls it (eager NCHW) and
  through `Model.predict_eps` with NCHW/channels-last × eager/CUDA graphs;
- VAE decode of B latents in float16 / bfloat16, NCHW / channels-last.

    python bench/bench_cuda_parts.py [--size 512] [--images 1,4] [--reps 10]
"""
import argparse
import copy
import statistics

import torch

from harness import build_sd15_components, cuda_event_ms, emit, machine_line
from comfyui_sld.sld_core.acceleration import ExecutionOptions
from comfyui_sld.sld_core.models.model import Model


def cuda_ms(fn, reps):
    return statistics.median(cuda_event_ms(fn, reps))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--images", default="1,4")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    device = torch.device("cuda")
    unet, vae, _ = build_sd15_components()
    unet_nchw = unet.to(device, torch.float16)
    unet_cl = copy.deepcopy(unet_nchw)
    models = {
        "predict_eps eager NCHW": Model(unet_nchw),
        "predict_eps graphs NCHW": Model(unet_nchw).set_execution(ExecutionOptions(cuda_graphs=True)),
        "predict_eps eager channels-last": Model(unet_cl).set_execution(ExecutionOptions(channels_last=True)),
        "predict_eps graphs channels-last (default)": Model(unet_cl).set_execution(ExecutionOptions.for_device(device)),
    }
    vaes = {}
    for dtype in (torch.float16, torch.bfloat16):
        for layout in (torch.contiguous_format, torch.channels_last):
            name = f"{str(dtype).removeprefix('torch.')} {'NCHW' if layout == torch.contiguous_format else 'channels-last'}"
            vaes[name] = (copy.deepcopy(vae).to(device, dtype).to(memory_format=layout), dtype, layout)
    print(machine_line(device))
    latent = args.size // 8
    with torch.inference_mode():
        for images in (int(n) for n in args.images.split(",")):
            for calls in (3, 2):
                batch = calls * images
                x = torch.randn(batch, 4, latent, latent, device=device)
                sigma = torch.full((batch,), 3.0, device=device)
                context = torch.randn(batch, 77, 768, device=device, dtype=torch.float16)
                x16, t = x.half(), torch.full((), 500.0, device=device)
                rows = {"unet() as diffusers calls it": cuda_ms(
                    lambda: unet_nchw(x16, t, encoder_hidden_states=context, return_dict=False)[0], args.reps)}
                for name, model in models.items():
                    rows[name] = cuda_ms(lambda: model.predict_eps(x, sigma, context), args.reps)
                for name, ms in rows.items():
                    print(f"UNet batch {batch:2d} ({calls}×{images}): {name:45s} {ms:7.2f} ms", flush=True)
                    emit(dict(bench="cuda_parts", part="unet", batch=batch, variant=name, ms=ms))
            z = torch.randn(images, 4, latent, latent, device=device)
            for name, (module, dtype, layout) in vaes.items():
                zz = z.to(dtype).contiguous(memory_format=layout)
                ms = cuda_ms(lambda: module.decode(zz).sample, args.reps)
                print(f"VAE decode {images} image(s): {name:20s} {ms:7.2f} ms", flush=True)
                emit(dict(bench="cuda_parts", part="vae", images=images, variant=name, ms=ms))


if __name__ == "__main__":
    main()
