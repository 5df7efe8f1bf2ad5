"""Stand-in for comfy/model_patcher.py: the MODEL object, i.e. a model plus its `model_options` and
object patches (attributes replaced for sampling runs, e.g. `model_sampling` by ComfyUI's
ModelSamplingDiscrete node)."""
import contextlib

import torch


def create_model_options_clone(options):
    """A copy of nested option dicts and lists; tensors and functions in them are shared."""
    if isinstance(options, dict):
        return {key: create_model_options_clone(value) for key, value in options.items()}
    if isinstance(options, list):
        return [create_model_options_clone(value) for value in options]
    return options


class ModelPatcher:
    def __init__(self, model, load_device=torch.device("cpu")):
        self.model = model
        self.load_device = load_device
        self.offload_device = torch.device("cpu")
        self.model_options = {"transformer_options": {}}
        self.object_patches = {}

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def get_model_object(self, name):
        return self.object_patches[name] if name in self.object_patches else getattr(self.model, name)

    def clone(self):
        patcher = ModelPatcher(self.model, self.load_device)
        patcher.model_options = create_model_options_clone(self.model_options)
        patcher.object_patches = dict(self.object_patches)
        return patcher

    @contextlib.contextmanager
    def patched(self):
        """The model with the object patches set on it, for one sampling run (ComfyUI sets them when it
        loads the model for sampling and restores the originals afterwards)."""
        saved = {name: getattr(self.model, name) for name in self.object_patches}
        for name, obj in self.object_patches.items():
            setattr(self.model, name, obj)
        try:
            yield self.model
        finally:
            for name, obj in saved.items():
                setattr(self.model, name, obj)

    def set_model_sampler_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.model_options["sampler_cfg_function"] = fn
        self._cfg1_optimization(disable_cfg1_optimization)

    def set_model_sampler_pre_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.model_options.setdefault("sampler_pre_cfg_function", []).append(fn)
        self._cfg1_optimization(disable_cfg1_optimization)

    def set_model_sampler_post_cfg_function(self, fn, disable_cfg1_optimization=False):
        self.model_options.setdefault("sampler_post_cfg_function", []).append(fn)
        self._cfg1_optimization(disable_cfg1_optimization)

    def _cfg1_optimization(self, disable):
        if disable:
            self.model_options["disable_cfg1_optimization"] = True
