"""Achieved UNet throughput against the device's measured matmul peak.

FLOPs of one SD1.5 UNet call are counted with `torch.utils.flop_counter` (matmuls, convolutions and
attention; normalisation and pointwise work are not counted, so this is the useful work), then the
call is timed as the sampler runs it (`Model.predict_eps` with each execution variant) and compared
with an n×n×n matmul of the same dtype measured in the same process.

    python bench/bench_unet_throughput.py [--device cuda] [--size 512] [--batch 3] [--precision fp16]
        [--variants eager,default,compile] [--calls 20]
"""
import argparse
import copy
import statistics

import torch
from torch.utils.flop_counter import FlopCounterMode

from harness import add_allocator_arg, apply_allocator, build_sd15_components, execution_options, emit, machine_line, matmul_peak_tflops, timed
from comfyui_sld.sld_core.device import PRECISIONS, precision_dtype
from comfyui_sld.sld_core.models.model import Model

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=3, help="UNet batch (3 = one SLD evaluation of one image)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto = fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--variants", default="default")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--reps", type=int, default=5)
    add_allocator_arg(parser)
    args = parser.parse_args()
    apply_allocator(args)
    device = torch.device(args.device)
    dtype = precision_dtype(args.precision, device)

    unet = build_sd15_components()[0].to(device, dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 4, args.size // 8, args.size // 8, generator=g).to(device)
    sigma = torch.full((args.batch,), 3.0, device=device)
    context = torch.randn(args.batch, 77, 768, generator=g).to(device)

    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        Model(unet).predict_eps(x, sigma, context)
    flops = counter.get_total_flops()
    peak = matmul_peak_tflops(device, dtype)
    print(machine_line(device))
    print(f"UNet {args.size}×{args.size}, batch {args.batch}, {dtype}: {flops / 1e9:.1f} GFLOP per call; "
          f"measured {dtype} matmul peak {peak:.3g} TFLOP/s")

    for variant in args.variants.split(","):
        options = execution_options(variant, device)
        module = unet if not options.channels_last else copy.deepcopy(unet)
        model = Model(module).set_execution(options)
        warm_s, _ = timed(lambda: [model.predict_eps(x, sigma, context) for _ in range(3)], device)
        per_call = []
        for _ in range(args.reps):
            seconds, _ = timed(lambda: [model.predict_eps(x, sigma, context) for _ in range(args.calls)], device)
            per_call.append(seconds / args.calls)
        median = statistics.median(per_call)
        achieved = flops / median / 1e12
        print(f"[{variant}] {median * 1e3:.2f} ms per call (min {min(per_call) * 1e3:.2f}, max {max(per_call) * 1e3:.2f}); "
              f"{achieved:.3g} TFLOP/s = {achieved / peak:.1%} of peak (warm-up {warm_s:.1f} s)", flush=True)
        emit(dict(bench="unet_throughput", device=device.type, size=args.size, batch=args.batch, dtype=str(dtype),
                  variant=variant, gflop=flops / 1e9, ms=(min(per_call) * 1e3, median * 1e3, max(per_call) * 1e3),
                  tflops=achieved, peak_tflops=peak, fraction=achieved / peak))


if __name__ == "__main__":
    main()
