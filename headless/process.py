"""Speed options of the `sld` command (--precision, --compile) and the process-wide settings it may
make because it owns its process (a host such as ComfyUI keeps its own).

Importing this module must stay cheap (no torch): `sld --help` builds its parser from it."""
import logging

log = logging.getLogger(__name__)

# sld_core.device.PRECISIONS, written out so that building the parser does not import torch
# (tests/headless/test_cli.py holds the two equal).
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def add_speed_args(parser):
    """--precision and --compile, shared by `sld run` and `sld eval`."""
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="models' dtype; auto = fp16 on CUDA, fp32 on CPU (bf16 pays only on CPUs with AMX/AVX512-BF16)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet: faster steps after a one-time compilation per image size "
                             "(about 50 s on an H200, minutes on a small CPU); pays over many images")


def prepare_process(device, precision):
    """Process-wide settings the `sld` command may make because it owns its process: the CPU allocator
    policy (sld_core.acceleration.tune_cpu_allocator); a warning for bf16 on a CPU without bf16 units."""
    if device.type != "cpu":
        return
    from ..sld_core.acceleration import tune_cpu_allocator
    from ..sld_core.device import cpu_has_fast_bf16

    tune_cpu_allocator()
    if precision == "bf16" and not cpu_has_fast_bf16():
        log.warning("--precision bf16: this CPU has no native bf16 matrix units; expect it to be far slower than fp32")
