"""How a `Model`'s UNet is executed: memory layout, CUDA-graph replay and `torch.compile`.

The UNet is nearly all of an SLD run's time, so this is where speed is won or lost; every switch here was kept
because `bench/` measured it (figures in bench/RESULTS.md):

- **CUDA graphs** (CUDA only): an SD1.x UNet forward is ~1000 small kernel launches, so at batch 1–3
  an eager UNet is bound by the CPU issuing them. A graph captured once per input shape replays them
  all in one launch. SLD needs at most two shapes per run (batch 2 while the safety pass is skipped,
  batch 3 after), so capture costs two warm-up calls each.
- **channels-last** (CUDA only): cuDNN's tensor-core convolutions read NHWC; on the CPU oneDNN ran the
  SD1.5 UNet slower in it, so the CPU keeps NCHW.
- **torch.compile** (opt-in, ``compile=True``): Inductor fuses the UNet's normalisation and pointwise
  work; it costs a compilation per input shape (tens of seconds to minutes), so it pays only over many
  images in one process. On CUDA the SLD combination then also runs as one fused kernel
  (`guidance_compiled`); on the CPU it stays eager, where fusing it saves nothing measurable.

`ExecutionOptions.for_device` holds the defaults; `UNetRunner` applies them. `tune_cpu_allocator` is
the one process-wide switch, for programs that own their process (the `sld` command).
"""
import ctypes
import ctypes.util
import logging
import sys
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


@dataclass(frozen=True)
class ExecutionOptions:
    channels_last: bool = False
    cuda_graphs: bool = False
    compile: bool = False
    fused_guidance: bool = False  # the SLD step as one compiled kernel (guidance_compiled)

    @classmethod
    def for_device(cls, device, compile=False):
        """The measured defaults: on CUDA channels-last + CUDA graphs, and with `compile` the fused SLD
        kernel; eager NCHW elsewhere."""
        cuda = torch.device(device).type == "cuda"
        compile = bool(compile)
        return cls(channels_last=cuda, cuda_graphs=cuda, compile=compile, fused_guidance=cuda and compile)


class _CapturedCall:
    """One CUDA graph of the UNet for one input signature, with the static buffers it reads and writes."""

    def __init__(self, forward, inputs, pool):
        self.inputs = [tensor.clone() for tensor in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture: cuDNN/cuBLAS pick their algorithms here
            for _ in range(2):
                forward(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool):
            self.output = forward(*self.inputs)

    def __call__(self, inputs):
        for static, tensor in zip(self.inputs, inputs):
            static.copy_(tensor)
        self.graph.replay()
        return self.output.clone()  # the next replay overwrites the static output


class UNetRunner:
    """Calls ``unet(x, timestep, encoder_hidden_states=context)`` as `options` say; returns its output
    (fresh tensor). ``added`` (SDXL): (text_embeds, time_ids), passed as diffusers' ``added_cond_kwargs``."""

    def __init__(self, unet, options=ExecutionOptions()):
        self.unet = unet
        self.options = options
        if options.channels_last:
            unet.to(memory_format=torch.channels_last)
        self._compiled = torch.compile(self._eager, dynamic=False) if options.compile else None
        self._graphs = {}
        self._pool = None

    def _eager(self, x, timestep, context, *added):
        kwargs = {"added_cond_kwargs": {"text_embeds": added[0], "time_ids": added[1]}} if added else {}
        return self.unet(x, timestep, encoder_hidden_states=context, return_dict=False, **kwargs)[0]

    def _forward(self, x, timestep, context, *added):
        if self._compiled is None:
            return self._eager(x, timestep, context, *added)
        if x.is_cuda:
            return self._compiled(x, timestep, context, *added)
        # On the CPU, freezing lets Inductor treat the weights as constants and store them in oneDNN's
        # layout once, instead of re-laying them out on every call; scoped to our compilations.
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True):
            return self._compiled(x, timestep, context, *added)

    def __call__(self, x, timestep, context, added=()):
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if not (self.options.cuda_graphs and x.is_cuda):
            return self._forward(x, timestep, context, *added)
        inputs = (x, timestep, context, *added)
        key = tuple((tuple(t.shape), t.dtype, t.stride()) for t in inputs)
        call = self._graphs.get(key)
        if call is None:
            call = self._graphs[key] = _CapturedCall(self._forward, inputs, self._pool)
            self._pool = call.graph.pool()  # every shape's graph shares one memory pool
        return call(inputs)


def tune_cpu_allocator():
    """Let glibc's malloc keep and reuse the large buffers a CPU UNet call frees, instead of handing them
    back to the kernel. Returns whether it applied (Linux with glibc only).

    oneDNN re-lays-out every convolution's weights into fresh scratch buffers on each call, and the
    largest of them (a 1280-channel 3×3 weight is 59 MB) exceed anything glibc's mmap threshold can be
    raised to (32 MB). With glibc's defaults each such buffer is a new mmap whose pages the kernel
    faults in and zeroes again on every call; that costs a tenth of a CPU UNet call and more
    (bench/RESULTS.md, "The CPU allocator"). So malloc serves every size from its heap (``M_MMAP_MAX``
    0) and keeps up to 256 MB of free heap (``M_TRIM_THRESHOLD``): the second call reuses the first
    call's pages. Model weights are unaffected (they are file maps or allocated once). The setting is
    process-wide, so only a program that owns its process calls it (the `sld` command, on the CPU);
    inside a host such as ComfyUI the host's policy stays, and `docs/performance.md` gives the
    environment variables that do the same for any process.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 256 * 2**20))
    log.debug("CPU allocator tuned for UNet scratch buffers: %s", applied)
    return applied
