"""What every benchmark shares: SD1.5-sized seeded components, the two pipelines under test, timing.

Benchmarks are scripts, not tests: they print ratios measured side by side in one process. Timings
synchronise the device before reading the clock, so asynchronous CUDA work is counted where it runs.
"""
import json
import platform
import statistics
import time
from importlib import resources

import torch

PROMPT = "a photograph of an astronaut riding a horse"
NEGATIVE = "blurry"
SEED = 42


def sd15_config(name):
    text = resources.files("comfyui_sld.sld_core.models").joinpath("configs", f"sd15_{name}.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_") and k != "architectures"}


def build_sd15_components(seed=0):
    """Seeded random-weight SD1.5 UNet (859.5 M), VAE (83.7 M) and CLIP-L text encoder (123.1 M), float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**sd15_config("unet")).eval().requires_grad_(False)
    vae = AutoencoderKL(**sd15_config("vae")).eval().requires_grad_(False)
    text_encoder = CLIPTextModel(CLIPTextConfig(**sd15_config("text_encoder"))).eval().requires_grad_(False)
    return unet, vae, text_encoder


def safe_pipeline(unet, vae, text_encoder, tokenizer):
    """diffusers' StableDiffusionPipelineSafe over the given modules, Euler (≡ our euler/normal)."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipelineSafe

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="linspace", steps_offset=1)
    pipe = StableDiffusionPipelineSafe(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_ours(model, clip, vae, params, size, steps, batch=1):
    """The whole job as `sld run` does it: encode three texts, sample with SLD (or CFG if params is
    None), decode. Returns (IMAGE [B, H, W, 3] on the CPU, final latent in model space)."""
    from comfyui_sld.sld_core.guidance import DEFAULT_SAFETY_CONCEPT
    from comfyui_sld.sld_core.ksample import ksample

    positive, negative = clip.encode(PROMPT), clip.encode(NEGATIVE)
    concept = clip.encode(DEFAULT_SAFETY_CONCEPT) if params is not None else None
    latent = {"samples": torch.zeros(batch, 4, size // 8, size // 8)}
    out = ksample(model, SEED, steps, 7.5, "euler", "normal", positive, negative, latent,
                  safety_concept=concept, sld_params=params, disable_pbar=True)
    return vae.decode(out["samples"]).numpy(), model.process_latent_in(out["samples"])


def run_diffusers(pipe, params, size, steps, batch=1):
    """The safe pipeline's whole job; returns (images [B, H, W, 3], final latent in model space)."""
    from comfyui_sld.sld_core.noise import prepare_noise

    final = {}
    # The seed's noise as ComfyUI draws it (float32 on the CPU), handed to diffusers, which would
    # otherwise draw it in the pipeline's dtype: float16 draws are another sequence altogether.
    noise = prepare_noise(torch.zeros(batch, 4, size // 8, size // 8), SEED).to(pipe.unet.dtype)
    images = pipe(PROMPT, negative_prompt=NEGATIVE, height=size, width=size, num_inference_steps=steps,
                  guidance_scale=7.5, latents=noise, output_type="np", num_images_per_prompt=batch,
                  sld_guidance_scale=params.guidance_scale, sld_warmup_steps=params.warmup_steps,
                  sld_threshold=params.threshold, sld_momentum_scale=params.momentum_scale,
                  sld_mom_beta=params.momentum_beta, callback=lambda i, t, latents: final.update(latents=latents)).images
    return images, final["latents"].float().cpu()


class DiffusersWorker:
    """diffusers' safe pipeline in a process of its own (same seeded components), run on request.

    For CPU comparisons where our side sets a process-wide policy (the allocator tuning of `sld`) that
    diffusers' users do not have: the two sides still alternate run by run, each in its own process.
    """

    def __init__(self, device, dtype):
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # a fresh interpreter: glibc's default malloc policy
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_diffusers_worker, args=(child, str(device), dtype), daemon=True)
        self.process.start()
        self.connection.recv()  # components built

    def run(self, params, size, steps, batch):
        """(seconds, (images, final latent)) of one whole diffusers run, timed inside the worker."""
        self.connection.send((params, size, steps, batch))
        return self.connection.recv()

    def close(self):
        self.connection.send(None)
        self.process.join()


def _diffusers_worker(connection, device, dtype):
    from comfyui_sld.sld_core.models.clip import load_clip_tokenizer

    modules = [m.to(device, dtype) for m in build_sd15_components()]
    pipe = safe_pipeline(*modules, load_clip_tokenizer())
    connection.send("ready")
    while (job := connection.recv()) is not None:
        params, size, steps, batch = job
        connection.send(timed(lambda: run_diffusers(pipe, params, size, steps, batch), device))


def add_allocator_arg(parser):
    parser.add_argument("--allocator", choices=("default", "tuned"), default="default",
                        help="tuned: sld_core.acceleration.tune_cpu_allocator for the whole process (both sides), "
                             "as the `sld` command runs on the CPU")


def apply_allocator(args):
    if args.allocator == "tuned":
        from comfyui_sld.sld_core.acceleration import tune_cpu_allocator

        print(f"CPU allocator tuned for the whole process: {tune_cpu_allocator()}")


def execution_options(variant, device):
    """Our execution variants by name: "eager" (plain NCHW), "default" (the device's defaults) and
    "compile" (default + torch.compile), as `sld_core.acceleration` defines them."""
    from comfyui_sld.sld_core.acceleration import ExecutionOptions

    if variant == "eager":
        return ExecutionOptions()
    return ExecutionOptions.for_device(device, compile=variant == "compile")


def synchronize(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device="cpu"):
    """(seconds, result) of one call, the device synchronised on both sides."""
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def cuda_event_ms(fn, reps, calls=1, warmup=3):
    """Per-call GPU milliseconds of `fn`, one value per repetition of `calls` calls, timed with CUDA
    events after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return times


def spread(values):
    """(min, median, max)."""
    return min(values), statistics.median(values), max(values)


def fmt_spread(values, digits=3):
    lo, mid, hi = spread(values)
    return f"{mid:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"


def machine_line(device):
    device = torch.device(device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name()
    else:
        where = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    import diffusers
    import transformers

    return (f"{where}; torch {torch.__version__}, diffusers {diffusers.__version__}, "
            f"transformers {transformers.__version__}; {time.strftime('%Y-%m-%d')}")


def matmul_peak_tflops(device, dtype, n=None, reps=7):
    """Measured n×n×n matmul rate (TFLOP/s, median of `reps`) on random data: the ceiling we compare to."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    inner = 10 if device.type == "cuda" else 3
    for _ in range(3):
        a @ b
    rates = []
    for _ in range(reps):
        seconds, _ = timed(lambda: [a @ b for _ in range(inner)], device)
        rates.append(2 * n**3 * inner / seconds / 1e12)
    return statistics.median(rates)


def emit(record):
    """One machine-readable result line (bench/run_all.py collects these)."""
    print("RESULT " + json.dumps(record), flush=True)
