"""Every node class keeps ComfyUI's V1 contract, and the package loads the way ComfyUI loads it."""
import importlib.util
import inspect
import sys
from pathlib import Path

import pytest
import torch

from comfyui_sld.nodes import CORE_NODE_CLASS_MAPPINGS, HEADLESS_NODE_CLASS_MAPPINGS, NODE_CLASS_MAPPINGS
from comfyui_sld.nodes.context import Runtime, use_runtime
from comfyui_sld.nodes.folders import ModelFolders

ROOT = Path(__file__).resolve().parents[1]
WIDGETS = {"INT", "FLOAT", "STRING", "BOOLEAN"}
SDXL_ONLY = {"CLIPTextEncodeSDXL"}  # refuses the demo's SD1.x CLIP, as ComfyUI's does (tests/test_sdxl_headless.py)
HIDDEN = {"PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models folder with a LoRA and a VAE file for the demo model (LoraLoader's and VAELoader's lists)."""
    from safetensors.torch import save_file

    from comfyui_sld.sld_core.demo import load_demo

    model, _, vae = load_demo("cpu")
    root = tmp_path_factory.mktemp("node_models") / "models"
    (root / "loras").mkdir(parents=True)
    (root / "vae").mkdir()
    out, inp = model.unet.conv_in.weight.shape[:2]
    save_file({"lora_unet_conv_in.lora_up.weight": torch.zeros(out, 1, 1, 1),
               "lora_unet_conv_in.lora_down.weight": torch.zeros(1, inp, 3, 3)}, str(root / "loras" / "demo.safetensors"))
    save_file({k: v.contiguous() for k, v in vae.autoencoder.state_dict().items()}, str(root / "vae" / "demo.safetensors"))
    return root


@pytest.fixture
def runtime(tmp_path, models_dir):
    rt = Runtime(models=ModelFolders(models_dir), input_dir=ROOT / "workflows" / "input",
                 output_dir=tmp_path / "out", temp_dir=tmp_path / "temp", device="cpu")
    with use_runtime(rt):
        yield rt


@pytest.mark.parametrize("name", sorted(HEADLESS_NODE_CLASS_MAPPINGS))
def test_input_types_are_well_formed(runtime, name):
    cls = HEADLESS_NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"}
    for section in ("required", "optional"):
        for input_name, entry in spec.get(section, {}).items():
            assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, input_name
            kind, options = entry[0], (entry[1] if len(entry) == 2 else {})
            assert isinstance(options, dict)
            if isinstance(kind, list):
                assert kind and all(isinstance(v, str) for v in kind), input_name
                assert options.get("default", kind[0]) in kind
                continue
            assert isinstance(kind, str) and kind == kind.upper(), input_name
            if kind in ("INT", "FLOAT"):
                assert "default" in options, input_name
                assert options.get("min", -float("inf")) <= options["default"] <= options.get("max", float("inf"))
                assert isinstance(options["default"], int if kind == "INT" else float)
            if kind == "STRING" and "default" in options:
                assert isinstance(options["default"], str)
    assert set(spec.get("hidden", {}).values()) <= HIDDEN


@pytest.mark.parametrize("name", sorted(HEADLESS_NODE_CLASS_MAPPINGS))
def test_function_takes_exactly_the_inputs(runtime, name):
    cls = HEADLESS_NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    inputs = {n for section in spec.values() for n in section}
    params = inspect.signature(getattr(cls, cls.FUNCTION)).parameters
    assert inputs <= set(params) - {"self"}
    extra = set(params) - {"self"} - inputs  # allowed only with a default (PreviewImage's filename_prefix)
    assert all(params[n].default is not inspect.Parameter.empty for n in extra)
    required = {n for n, p in params.items() if p.default is inspect.Parameter.empty and n != "self"}
    assert required <= set(spec["required"])
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert len(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert len(getattr(cls, "OUTPUT_TOOLTIPS", cls.RETURN_TYPES)) == len(cls.RETURN_TYPES)
    assert isinstance(cls.CATEGORY, str) and cls.CATEGORY
    if name in NODE_CLASS_MAPPINGS:
        assert cls.DESCRIPTION and cls.CATEGORY.split("/")[0] == "SLD"  # one menu for the whole pack


def is_type(kind, value):
    from comfyui_sld.sld_core.models.clip import Clip
    from comfyui_sld.sld_core.models.model import Model
    from comfyui_sld.sld_core.models.vae import Vae
    from comfyui_sld.sld_core.guiders import CFGGuider
    from comfyui_sld.sld_core.safety import SafetyChecker
    from comfyui_sld.sld_core.samplers import SAMPLERS

    checks = {
        "MODEL": lambda v: isinstance(v, Model),
        "CLIP": lambda v: isinstance(v, Clip),
        "VAE": lambda v: isinstance(v, Vae),
        "CONDITIONING": lambda v: isinstance(v, list) and torch.is_tensor(v[0][0]) and "pooled_output" in v[0][1],
        "LATENT": lambda v: isinstance(v, dict) and v["samples"].ndim == 4 and v["samples"].shape[1] == 4,
        "IMAGE": lambda v: torch.is_tensor(v) and v.ndim == 4 and v.shape[-1] == 3 and v.dtype == torch.float32,
        "MASK": lambda v: torch.is_tensor(v) and v.ndim == 3,
        "SAFETY_CHECKER": lambda v: isinstance(v, SafetyChecker),
        "BOOLEAN": lambda v: isinstance(v, bool),
        "STRING": lambda v: isinstance(v, str),
        "GUIDER": lambda v: isinstance(v, CFGGuider),
        "SAMPLER": lambda v: v in SAMPLERS.values(),
        "SIGMAS": lambda v: torch.is_tensor(v) and v.ndim == 1 and v.dtype == torch.float32,
        "NOISE": lambda v: isinstance(v.seed, int) and v.generate_noise({"samples": torch.zeros(1, 4, 2, 2)}).shape
        == (1, 4, 2, 2),
    }
    return checks[kind](value)


@pytest.fixture(scope="module")
def samples():
    """One real value of each socket type, from the embedded demo model."""
    from comfyui_sld.sld_core.demo import load_demo

    model, clip, vae = load_demo("cpu")
    cond = clip.encode("a cat")
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    from comfyui_sld.sld_core.guiders import CFGGuider
    from comfyui_sld.sld_core.noise import RandomNoise
    from comfyui_sld.sld_core.safety import load_open_nsfw
    from comfyui_sld.sld_core.samplers import sample_euler
    from comfyui_sld.sld_core.schedules import scheduler_sigmas

    return {"MODEL": model, "CLIP": clip, "VAE": vae, "CONDITIONING": cond, "LATENT": latent,
            "IMAGE": vae.decode(latent["samples"]), "SAFETY_CHECKER": load_open_nsfw(),
            "GUIDER": CFGGuider(model, cond, cond, 7.5), "SAMPLER": sample_euler,
            "SIGMAS": scheduler_sigmas(model.schedule, "normal", 2), "NOISE": RandomNoise(0),
            "MASK": torch.zeros(1, 64, 64)}


@pytest.mark.parametrize("name", sorted(HEADLESS_NODE_CLASS_MAPPINGS))
def test_return_types_match_a_real_call(runtime, samples, name):
    cls = HEADLESS_NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    kwargs = {}
    for input_name, entry in {**spec["required"], **spec.get("optional", {})}.items():
        kind, options = entry[0], (entry[1] if len(entry) == 2 else {})
        if isinstance(kind, list):
            kwargs[input_name] = options.get("default", kind[0])
        elif kind in WIDGETS:
            kwargs[input_name] = options.get("default", "a cat" if kind == "STRING" else None)
        else:
            kwargs[input_name] = samples[kind]
    for small in ("steps",):  # keep real calls fast
        if small in kwargs:
            kwargs[small] = 2
    if name == "EmptyLatentImage":
        kwargs.update(width=64, height=64)
    if name in SDXL_ONLY:
        from comfyui_sld.nodes.errors import NodeInputError

        with pytest.raises(NodeInputError, match="needs the CLIP of an SDXL base checkpoint"):
            getattr(cls(), cls.FUNCTION)(**kwargs)
        return
    out = getattr(cls(), cls.FUNCTION)(**kwargs)
    if getattr(cls, "OUTPUT_NODE", False):
        assert isinstance(out, dict) and out["ui"]["images"]
        assert all(Path(image["path"]).is_file() for image in out["ui"]["images"])
        return
    if isinstance(out, dict):  # {"ui": ..., "result": ...}: ComfyUI shows `ui`, passes `result` on
        out = out["result"]
    assert isinstance(out, tuple) and len(out) == len(cls.RETURN_TYPES)
    for kind, value in zip(cls.RETURN_TYPES, out):
        assert is_type(kind, value), (name, kind)


def test_sld_disabled_equals_ksampler(runtime, samples):
    """Preset disabled is exactly KSampler (same seed, same latent)."""
    from comfyui_sld.nodes import KSampler, SLDKSampler

    common = dict(model=samples["MODEL"], seed=3, steps=3, cfg=7.5, sampler_name="euler", scheduler="normal",
                  positive=samples["CONDITIONING"], negative=samples["CONDITIONING"],
                  latent_image=samples["LATENT"], denoise=1.0)
    plain = KSampler().sample(**common)[0]["samples"]
    sld = SLDKSampler().sample(**common, safety_concept=samples["CONDITIONING"], sld_preset="disabled",
                               sld_guidance_scale=1000.0, sld_warmup_steps=10, sld_threshold=0.01,
                               sld_momentum_scale=0.3, sld_momentum_beta=0.4)[0]["samples"]
    assert torch.equal(plain, sld)


def test_package_imports_like_comfyui_loads_it():
    """ComfyUI imports the folder under a path-derived module name; only SLD nodes are exported."""
    before = set(sys.modules)
    module_name = str(ROOT / "custom_nodes" / "comfyui-sld").replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
        assert set(module.NODE_CLASS_MAPPINGS) == {"SLDKSampler", "SLDSafetyConcept", "SLDCheckpointLoader", "SLDImageGrid",
                                                   "SLDSafetyCheckerLoader", "SLDSafetyChecker", "SLDGuider",
                                                   "SLDKSamplerAdvanced"}
        assert not set(module.NODE_CLASS_MAPPINGS) & set(CORE_NODE_CLASS_MAPPINGS)
        assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(module.NODE_CLASS_MAPPINGS)
        added = set(sys.modules) - before
        assert all(m == module_name or m.startswith(module_name + ".") or "comfyui_sld" not in m for m in added)
        for shadowed in ("nodes", "headless", "sld_core", "comfy", "folder_paths", "execution", "server", "utils"):
            assert shadowed not in added, shadowed
    finally:
        for name in [m for m in sys.modules if m == module_name or m.startswith(module_name + ".")]:
            del sys.modules[name]
