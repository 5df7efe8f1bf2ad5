"""The SLD guidance step alone: the eager reference (what runs on the CPU) vs the torch.compile-fused
kernel (CUDA with --compile), side by side.

One SLD step on a [4, 4, 64, 64] float32 batch (512×512 latents, batch 4) by default: µs per call,
min/median/max over `--reps` repetitions of `--calls` calls each, after warm-up (and after the compiled
kernel's one-time compilation, reported separately). The bandwidth row is what the fused kernel must
move (read ε_u, ε_p, ε_S, ν; write ε̂, ν: 6 tensors) divided by its time, as a fraction of what a plain
copy of the same number of bytes achieves on this machine.

On CUDA a second table times the GPU alone: `--calls` calls captured in one CUDA graph and replayed,
so Python and launch overhead (what a captured sampling step does not pay) stay out of it.

    python bench/bench_guidance_kernel.py [--device cpu|cuda] [--shape 4,4,64,64] [--reps 7]
"""
import argparse
import statistics
import time

import torch

from harness import emit, machine_line
from comfyui_sld.sld_core.guidance import PRESETS, sld_guidance
from comfyui_sld.sld_core.guidance_compiled import sld_guidance_compiled


def per_call_us(fn, calls, reps, sync):
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        times.append((time.perf_counter() - t) / calls * 1e6)
    return min(times), statistics.median(times), max(times)


def graph_us(fn, calls, reps):
    """GPU µs per call of `fn`, from `calls` calls captured in one CUDA graph and timed with events."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return min(times), statistics.median(times), max(times)


def print_table(title, results, nbytes):
    ref_median = results["reference (eager, one tensor per op)"][1]
    copy_median = results["plain copy of the same bytes"][1]
    print(f"\n{title}\n")
    print("| kernel | µs min / median / max | reference / this (median) | GB/s (6 tensors) | vs plain copy |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, (lo, mid, hi) in results.items():
        print(f"| {name} | {lo:.1f} / {mid:.1f} / {hi:.1f} | {ref_median / mid:.2f}× | "
              f"{nbytes / mid / 1e3:.1f} | {copy_median / mid:.2f} |")
        emit(dict(bench="guidance_kernel", timing=title, kernel=name, us=(lo, mid, hi),
                  vs_reference=ref_median / mid, vs_copy=copy_median / mid))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", default="4,4,64,64")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--preset", default="medium")
    args = p.parse_args()
    shape = tuple(int(n) for n in args.shape.split(","))
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    eps_u, eps_c, eps_s = (torch.randn(shape, generator=g).mul_(0.05).to(device) for _ in range(3))
    params = PRESETS[args.preset]
    step = params.warmup_steps  # a step that applies the safety term
    momentum = torch.zeros(shape, device=device)

    t = time.perf_counter()
    compiled_out, _ = sld_guidance_compiled(eps_u, eps_c, eps_s, 7.5, params, momentum.clone(), step)
    sync()
    compile_s = time.perf_counter() - t
    reference_out, _ = sld_guidance(eps_u, eps_c, eps_s, 7.5, params, momentum.clone(), step)
    max_diff = (compiled_out - reference_out).abs().max().item()

    # The fused kernel reads 4 tensors and writes 2; a copy of 3 tensors' worth reads 3 and writes 3:
    # the same bytes through memory.
    source, target = torch.randn(3 * eps_u.numel(), device=device), torch.empty(3 * eps_u.numel(), device=device)
    kernels = {
        "reference (eager, one tensor per op)": lambda: sld_guidance(eps_u, eps_c, eps_s, 7.5, params, momentum, step),
        "torch.compile fused (sld_guidance_compiled)": lambda: sld_guidance_compiled(eps_u, eps_c, eps_s, 7.5, params, momentum, step),
        "plain copy of the same bytes": lambda: target.copy_(source),
    }
    for fn in kernels.values():  # warm-up
        for _ in range(50):
            fn()
    results = {name: per_call_us(fn, args.calls, args.reps, sync) for name, fn in kernels.items()}

    nbytes = 6 * eps_u.numel() * eps_u.element_size()
    print(f"device {device} ({machine_line(device)}); shape {list(shape)} float32; preset {args.preset} at step {step}")
    print(f"compiled kernel: first call (compilation) {compile_s:.1f} s; max |compiled − reference| {max_diff:.2e}")
    print(f"{args.reps} reps × {args.calls} calls; bytes a fused kernel must move: {nbytes / 1e6:.2f} MB")
    print_table("Wall clock per call (Python, launch and kernel)", results, nbytes)
    if device.type == "cuda":
        graphed = {name: graph_us(fn, args.calls, args.reps) for name, fn in kernels.items()}
        print_table("GPU time per call (replayed from a CUDA graph)", graphed, nbytes)


if __name__ == "__main__":
    main()
