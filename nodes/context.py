"""What a node needs from the program that runs it: model/input/output folders, the device, progress.

Inside ComfyUI these come from ComfyUI itself (`folder_paths`, `comfy.utils.ProgressBar`), imported
lazily and only when ComfyUI is the host. The headless runner instead activates a `Runtime` for the
duration of a run (`use_runtime`), so node classes keep ComfyUI's argument-less `INPUT_TYPES()` and
still list the files of the folders the user named on the command line.
"""
import contextlib
import contextvars
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .folders import ModelFolders

_active = contextvars.ContextVar("comfyui_sld_runtime", default=None)


@dataclass(frozen=True)
class Runtime:
    """Folders, device, precision and progress hook of one headless session.

    `progress(value, total)` is called after every sampling step; it may raise (the headless runner
    raises its `Interrupted` there) to stop a run between two steps.
    """

    models: ModelFolders = field(default_factory=lambda: ModelFolders("models"))
    input_dir: Path = Path("input")
    output_dir: Path = Path("output")
    temp_dir: Path = Path(tempfile.gettempdir()) / "comfyui-sld"
    device: str = "auto"
    precision: str = "auto"  # sld_core.device.PRECISIONS
    compile: bool = False  # torch.compile the UNet (sld_core.acceleration)
    progress: Optional[Callable[[int, int], None]] = None


@contextlib.contextmanager
def use_runtime(runtime):
    """Make `runtime` the one nodes see (in this thread/context) until the block ends."""
    token = _active.set(runtime)
    try:
        yield runtime
    finally:
        _active.reset(token)


def in_comfyui():
    """True when ComfyUI is the host: it imports `folder_paths` and `comfy` before any custom node."""
    return "folder_paths" in sys.modules and "comfy.utils" in sys.modules


def comfy_module(name):
    """One of ComfyUI's modules, when ComfyUI is the host (never imported otherwise)."""
    return sys.modules.get(name) or __import__(name, fromlist=["_"])


def current_runtime():
    """The active headless `Runtime`, or a default one (./models, ./input, ./output) outside ComfyUI."""
    runtime = _active.get()
    return runtime if runtime is not None else _default_runtime()


def headless_active():
    return _active.get() is not None


def _default_runtime():
    return Runtime(models=ModelFolders(os.environ.get("SLD_MODELS_DIR", "models")))


def step_callback():
    """A `ksample` callback reporting each step to the host (headless hook or ComfyUI's ProgressBar)."""
    runtime = _active.get()
    if runtime is not None:
        if runtime.progress is None:
            return None
        return lambda i, denoised, x, total: runtime.progress(i + 1, total)
    if in_comfyui():
        bar = {}

        def report(i, denoised, x, total):
            # ComfyUI's ProgressBar update also raises its interrupt exception when the user cancels.
            if "bar" not in bar:
                bar["bar"] = comfy_module("comfy.utils").ProgressBar(total)
            bar["bar"].update_absolute(i + 1, total)

        return report
    return None
