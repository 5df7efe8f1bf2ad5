"""One-off GPU experiment (not part of run_all): where do the FillFunctor<int> kernels seen when
profiling the compiled batch-12 UNet call come from, and do they run in the replayed CUDA graph?
Profiles the eager call, the compiled call without graphs and the graph replay, with CPU ops and their
shapes. Conclusion (bench/RESULTS.md, results/h200-2026-11-26b/explore2.txt): a profiler artefact.

    python bench/experiments/profile_fill_kernels.py  # CUDA only; under 2 minutes on an H200
"""
import glob
import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/
from harness import build_sd15_components, cuda_event_ms  # noqa: E402
from comfyui_sld.sld_core.acceleration import ExecutionOptions, UNetRunner  # noqa: E402

dev, dt = torch.device("cuda"), torch.float16
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def show(label, prof, calls):
    ev = prof.key_averages()
    cuda_total = sum(e.self_device_time_total for e in ev) / 1e3 / calls
    fills = [e for e in ev if "FillFunctor" in e.key or "fill" in e.key.lower() or "zero" in e.key.lower()]
    log(f"{label}: kernel time per call {cuda_total:.2f} ms")
    for e in fills:
        log(f"   {e.key[:110]}: count/call {e.count / calls:.1f}, device ms/call {e.self_device_time_total / 1e3 / calls:.3f}")
    shapes = prof.key_averages(group_by_input_shape=True)
    for e in shapes:
        if e.key in ("aten::fill_", "aten::zero_", "aten::zeros", "aten::full", "aten::new_zeros", "aten::zeros_like"):
            log(f"   CPU op {e.key} shapes {str(e.input_shapes)[:160]} count/call {e.count / calls:.1f}")
    print(ev.table(sort_by="self_device_time_total", row_limit=12, max_name_column_width=70), flush=True)


unet = build_sd15_components()[0].to(dev, dt)
g = torch.Generator(device=dev).manual_seed(0)
x = torch.randn(12, 4, 64, 64, device=dev, generator=g, dtype=dt)
ts = torch.full((12,), 500.0, device=dev)
ctx = torch.randn(12, 77, 768, device=dev, generator=g, dtype=dt)
acts = [ProfilerActivity.CPU, ProfilerActivity.CUDA]
with torch.inference_mode():
    eager = UNetRunner(unet, ExecutionOptions())
    for _ in range(3):
        eager(x, ts, ctx)
    torch.cuda.synchronize()
    with profile(activities=acts, record_shapes=True) as prof:
        for _ in range(3):
            eager(x, ts, ctx)
        torch.cuda.synchronize()
    show("eager NCHW", prof, 3)
    unet.to(memory_format=torch.channels_last)
    runner = UNetRunner(unet, ExecutionOptions.for_device(dev, compile=True))
    t = time.time()
    runner(x, ts, ctx)
    log(f"compiled + captured in {time.time() - t:.1f} s")
    xc = x.contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        runner(x, ts, ctx)
    torch.cuda.synchronize()
    with profile(activities=acts, record_shapes=True) as prof:
        for _ in range(3):
            runner._forward(xc, ts, ctx)
        torch.cuda.synchronize()
    show("compiled, not graphed", prof, 3)
    with profile(activities=acts) as prof:
        for _ in range(3):
            runner(x, ts, ctx)
        torch.cuda.synchronize()
    show("compiled, graph replay", prof, 3)
    for fn, name in ((lambda: runner(x, ts, ctx), "graph"), (lambda: runner._forward(xc, ts, ctx), "no graph")):
        (ms,) = cuda_event_ms(fn, reps=1, calls=10, warmup=0)
        log(f"compiled {name}: {ms:.2f} ms per call")
root = os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/tmp/torchinductor_root")
for path in glob.glob(os.path.join(root, "**", "*.py"), recursive=True):
    text = open(path).read()
    if "def call(" not in text:
        continue
    hits = [ln.strip() for ln in text.splitlines() if ".zero_()" in ln or "fill_(" in ln or "torch.zeros(" in ln]
    log(f"output code {path}: {len(text)} chars, {len(hits)} zero/fill lines")
    for ln in hits[:15]:
        print("    ", ln[:200])
log("done")
