"""One-off GPU experiment (not part of run_all): does anything make the batch-12 SD1.5 UNet call faster
than the shipped variants? Times SDPA's attention backends on SD1.5's shapes, the default runner with
cuDNN attention preferred and with cudnn.benchmark, and torch.compile as shipped and with Inductor's
tuning flags, and profiles the compiled call. Its log and the conclusions are in bench/RESULTS.md
(results/h200-2026-11-26b/explore1.txt).

    python bench/experiments/cuda_options_b12.py      # CUDA only; about 6 minutes on an H200
"""
import contextlib
import os
import statistics
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # bench/
from harness import build_sd15_components, cuda_event_ms, matmul_peak_tflops  # noqa: E402
from comfyui_sld.sld_core.acceleration import ExecutionOptions, UNetRunner  # noqa: E402

dev = torch.device("cuda")
dt = torch.float16
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


def cuda_ms(fn, calls=10, reps=7):
    """(median, min, max) per-call milliseconds."""
    out = cuda_event_ms(fn, reps, calls)
    return statistics.median(out), min(out), max(out)


BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}

# 1. attention alone, SD1.5 shapes at batch 12
log("peak fp16", matmul_peak_tflops(dev, dt))
g = torch.Generator(device=dev).manual_seed(0)
for name, (b, h, n, m, d) in {"L1 self": (12, 8, 4096, 4096, 40), "L1 cross": (12, 8, 4096, 77, 40),
                              "L2 self": (12, 8, 1024, 1024, 80), "L3 self": (12, 8, 256, 256, 160)}.items():
    q = torch.randn(b, n, h, d, device=dev, generator=g, dtype=dt).transpose(1, 2)
    k = torch.randn(b, m, h, d, device=dev, generator=g, dtype=dt).transpose(1, 2)
    v = torch.randn(b, m, h, d, device=dev, generator=g, dtype=dt).transpose(1, 2)
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float())
    flops = 4 * b * h * n * m * d
    for bname, backend in BACKENDS.items():
        try:
            with sdpa_kernel(backend):
                f = lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)  # noqa: E731
                err = float((f().float() - ref).abs().max())
                ms = cuda_ms(f)
            log(f"attn {name} {bname}: {ms[0]:.3f} ms, {flops / ms[0] / 1e9:.0f} TFLOP/s, max err {err:.2e}")
        except Exception as exc:  # noqa: BLE001
            log(f"attn {name} {bname}: FAILED {type(exc).__name__}: {str(exc)[:200]}")

# 2. UNet, our default runner (graphs + channels-last), per attention backend
unet = build_sd15_components()[0].to(dev, dt)
log("components built")
x = {bs: torch.randn(bs, 4, 64, 64, device=dev, generator=g, dtype=dt) for bs in (3, 12)}
ts = {bs: torch.full((bs,), 500.0, device=dev) for bs in (3, 12)}
ctx = {bs: torch.randn(bs, 77, 768, device=dev, generator=g, dtype=dt) for bs in (3, 12)}

with torch.inference_mode():
    ref_out = UNetRunner(unet, ExecutionOptions())(x[12], ts[12], ctx[12]).float()
    log("diffusers-style eager b12", cuda_ms(lambda: unet(x[12], ts[12], encoder_hidden_states=ctx[12]).sample, reps=5))

    def measure(label, options, prefer=None, batches=(12, 3), inductor=None):
        import torch._dynamo
        import torch._inductor.config as ic

        torch._dynamo.reset()
        runner = UNetRunner(unet, options)
        for bs in batches:
            t = time.time()
            patch = ic.patch(inductor or {})
            with patch, (sdpa_kernel([prefer, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                      SDPBackend.MATH], set_priority=True) if prefer else contextlib.nullcontext()):
                out = runner(x[bs], ts[bs], ctx[bs])
            first = time.time() - t
            err = float((out.float() - ref_out).norm() / ref_out.norm()) if bs == 12 else float("nan")
            ms = cuda_ms(lambda: runner(x[bs], ts[bs], ctx[bs]), reps=5)
            log(f"{label} b{bs}: {ms[0]:.2f} ms ({ms[1]:.2f}-{ms[2]:.2f}); first call {first:.1f} s; rel err vs eager {err:.2e}")
        return runner

    default = ExecutionOptions.for_device(dev)
    measure("default flash", default)
    measure("default cudnn-attn", default, SDPBackend.CUDNN_ATTENTION)
    with torch.backends.cudnn.flags(enabled=True, benchmark=True):
        measure("default cudnn-attn + cudnn.benchmark", default, SDPBackend.CUDNN_ATTENTION)
    comp = ExecutionOptions.for_device(dev, compile=True)
    r = measure("compile cudnn-attn", comp, SDPBackend.CUDNN_ATTENTION, batches=(12,))
    # kernel breakdown of the compiled call (no graph, so the profiler sees each kernel)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            r._forward(x[12].contiguous(memory_format=torch.channels_last), ts[12], ctx[12])
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90), flush=True)
    tuned = dict(conv_1x1_as_mm=True, coordinate_descent_tuning=True, epilogue_fusion=False)
    measure("compile cudnn-attn + inductor tuned", comp, SDPBackend.CUDNN_ATTENTION, batches=(12,), inductor=tuned)
    measure("compile flash (as shipped)", comp, None, batches=(12,))
log("done")
