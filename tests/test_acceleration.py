"""Execution options of the UNet (sld_core.acceleration): each must compute what eager NCHW computes.

CUDA graphs need a GPU and are checked by the CUDA benchmark (bench/RESULTS.md: final latents vs
diffusers' equal the eager variant's to rounding); here, the CPU paths and the defaults.
"""
import pytest
import torch

from comfyui_sld.headless.cli import build_parser
from comfyui_sld.nodes.context import Runtime, use_runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.nodes.loaders import DEMO_CHECKPOINT, load_named_checkpoint
from comfyui_sld.sld_core.acceleration import ExecutionOptions, tune_cpu_allocator
from comfyui_sld.sld_core.device import precision_dtype
from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.guidance import PRESETS, sld_guidance
from comfyui_sld.sld_core.guiders import SLDGuider
from comfyui_sld.sld_core.ksample import ksample
from comfyui_sld.sld_core.models.model import Model


def conditioning(seed, tokens=77):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 32, generator=g), {"pooled_output": torch.zeros(1, 32)}]]


def sample(model, sampler="euler", steps=4, preset="max"):
    latent = {"samples": torch.zeros(2, 4, 8, 8)}
    out = ksample(model, 7, steps, 7.5, sampler, "karras", conditioning(1), conditioning(2), latent,
                  safety_concept=conditioning(3), sld_params=PRESETS[preset], disable_pbar=True)
    return out["samples"]


def test_defaults_follow_the_measurements():
    assert ExecutionOptions.for_device("cpu") == ExecutionOptions()  # eager NCHW: channels-last was slower
    cuda = ExecutionOptions.for_device("cuda")
    assert cuda.channels_last and cuda.cuda_graphs and not cuda.compile
    assert ExecutionOptions.for_device("cuda", compile=True).fused_guidance
    assert not ExecutionOptions.for_device("cpu", compile=True).fused_guidance  # no measurable gain on a CPU


def test_channels_last_computes_the_same_eps(tiny_components, fresh_tiny_components):
    eager = Model(tiny_components["unet"])
    x = torch.randn(3, 4, 8, 8)
    sigma = torch.tensor([14.6, 3.0, 0.5])
    context = torch.randn(3, 77, 32)
    expected = eager.predict_eps(x, sigma, context)
    channels_last = Model(fresh_tiny_components["unet"]).set_execution(ExecutionOptions(channels_last=True))
    got = channels_last.predict_eps(x, sigma, context)
    assert channels_last.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_compiled_unet_and_fused_guidance_sample_what_eager_samples(tiny_components, fresh_tiny_components):
    """torch.compile of the UNet (with freezing on the CPU) plus the fused SLD kernel (the CUDA
    `--compile` combination, forced here on the CPU): a whole SLD run with Heun (two evaluations a
    step, both batch sizes) lands where the eager run lands."""
    from comfyui_sld.sld_core.guidance_compiled import sld_guidance_compiled

    eager = Model(tiny_components["unet"])
    expected = sample(eager, sampler="heun", preset="medium", steps=12)
    guider = SLDGuider(eager, conditioning(1), conditioning(2), conditioning(3), 7.5, PRESETS["medium"])
    guider.prepare(torch.linspace(10, 0, 5))
    assert guider.run.combine is sld_guidance
    options = ExecutionOptions(compile=True, fused_guidance=True)
    compiled = Model(fresh_tiny_components["unet"]).set_execution(options)
    guider = SLDGuider(compiled, conditioning(1), conditioning(2), conditioning(3), 7.5, PRESETS["medium"])
    guider.prepare(torch.linspace(10, 0, 5))
    assert guider.run.combine is sld_guidance_compiled
    got = sample(compiled, sampler="heun", preset="medium", steps=12)
    assert float((got - expected).norm() / expected.norm()) < 1e-4


def test_guider_builds_each_context_batch_once_per_run(tiny_components):
    model = Model(tiny_components["unet"])
    guider = SLDGuider(model, conditioning(1), conditioning(2), conditioning(3), 7.5, PRESETS["max"])
    first = guider.contexts(("negative", "positive", "safety"), 2)
    assert guider.contexts(("negative", "positive", "safety"), 2) is first
    assert first.shape == (6, 77, 32)
    for rows, seed in ((slice(0, 2), 2), (slice(2, 4), 1), (slice(4, 6), 3)):  # negative, positive, safety
        torch.testing.assert_close(first[rows], conditioning(seed)[0][0].expand(2, -1, -1))


def test_timestep_lookup_stays_on_the_sigmas_device(tiny_components):
    model = Model(tiny_components["unet"])
    sigma = torch.tensor([14.6, 0.03])
    expected = (sigma.log()[None, :] - model.schedule.log_sigmas[:, None]).abs().argmin(dim=0)
    assert torch.equal(model.schedule.timestep(sigma), expected)


def test_allocator_tuning_keeps_results(tiny_components):
    """The allocator policy changes where buffers live, never what is computed."""
    unet = tiny_components["unet"]
    x, sigma, context = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 3.0]), torch.randn(2, 77, 32)
    before = Model(unet).predict_eps(x, sigma, context)
    assert tune_cpu_allocator()  # Linux/glibc here and in CI
    torch.testing.assert_close(Model(unet).predict_eps(x, sigma, context), before, rtol=0, atol=0)


def test_precision_names():
    assert precision_dtype("auto", torch.device("cpu")) == torch.float32
    assert precision_dtype("auto", torch.device("cuda")) == torch.float16
    assert precision_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(InvalidInputError, match="expected one of auto, fp32, fp16, bf16"):
        precision_dtype("fp8", torch.device("cpu"))


def test_runtime_precision_and_compile_reach_the_loaded_model(tmp_path):
    """`sld run --precision bf16 --compile` → the checkpoint loader's dtype and execution options."""
    runtime = Runtime(models=ModelFolders(tmp_path), device="cpu", precision="bf16", compile=True)
    with use_runtime(runtime):
        model, clip, vae = load_named_checkpoint(DEMO_CHECKPOINT)
    assert model.dtype == clip.text_encoder.dtype == vae.dtype == torch.bfloat16
    assert model.execution == ExecutionOptions(compile=True)


def test_cli_accepts_the_speed_options():
    parser = build_parser()
    args = parser.parse_args(["run", "w.json", "--precision", "bf16", "--compile"])
    assert (args.precision, args.compile) == ("bf16", True)
    args = parser.parse_args(["eval", "--precision", "fp32"])
    assert (args.precision, args.compile) == ("fp32", False)


FAULTS_PROBE = """
import resource, sys
if sys.argv[1] == "tuned":
    from comfyui_sld.sld_core.acceleration import tune_cpu_allocator
    assert tune_cpu_allocator()
import torch
conv = torch.nn.Conv2d(1280, 1280, 3, padding=1)  # a 59 MB weight, as in SD's lowest-resolution blocks
x = torch.randn(3, 1280, 8, 8)
faults = []
with torch.inference_mode():
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        conv(x)  # oneDNN re-lays the weight out into a scratch buffer of its size, then frees it
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(faults[-1])
"""


@pytest.mark.parametrize("how", ["default", "tuned", "environment"])
def test_the_tuned_allocator_reuses_large_buffers_instead_of_faulting_them_in_again(how):
    """What `tune_cpu_allocator` is for, and the documented environment variables that do the same for
    any process (docs/performance.md): a convolution's weight re-layout buffer (59 MB) is reused from
    call to call instead of being mapped, faulted in and zeroed again."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    if how == "environment":
        env.update(MALLOC_MMAP_MAX_="0", MALLOC_TRIM_THRESHOLD_="268435456")
    done = subprocess.run([sys.executable, "-c", FAULTS_PROBE, how], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    faults = int(done.stdout.split()[-1])
    pages = 59 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    if how == "default":
        assert faults > pages // 2  # a fresh mmap each call: its pages fault in (and are zeroed) again
    else:
        assert faults < pages // 100
