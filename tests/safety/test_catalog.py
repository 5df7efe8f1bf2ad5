"""Checker names (sld_core.safety.catalog): the loader node and `sld eval --classifier` load the same
checker for the same name, and a name that is neither built in nor a file fails closed, saying where
it was looked for."""
import pytest
import torch
from safetensors.torch import save_file

from comfyui_sld.headless.evaluate import load_classifier
from comfyui_sld.nodes.context import Runtime, use_runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.nodes.safety import SLDSafetyCheckerLoader
from comfyui_sld.sld_core.errors import SafetyCheckerError
from comfyui_sld.sld_core.safety.catalog import BUILT_IN, FOLDER, built_in_names, load_checker


def tiny_checker_file(path):
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    torch.manual_seed(0)
    vision = dict(hidden_size=64, intermediate_size=37, num_hidden_layers=2, num_attention_heads=1,
                  image_size=32, patch_size=8)
    model = StableDiffusionSafetyChecker(CLIPConfig(vision_config=vision, projection_dim=32))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def test_built_in_names_load_checkers_of_that_name():
    assert built_in_names()[0] == "open_nsfw"  # the default a fresh machine offers first
    for name in built_in_names():
        assert load_checker(name).name == name


def test_node_and_eval_load_the_same_checker(tmp_path):
    models = tmp_path / "models"
    (models / FOLDER).mkdir(parents=True)
    tiny_checker_file(models / FOLDER / "tiny.safetensors")
    images = torch.rand(2, 40, 48, 3, generator=torch.Generator().manual_seed(1))
    for name in ("demo_pixel", "sld_demo_checker", "tiny.safetensors"):
        with use_runtime(Runtime(models=ModelFolders(models), device="cpu")):
            from_node = SLDSafetyCheckerLoader().load_checker(name)[0]
        from_eval = load_classifier(name, ModelFolders(models), "cpu")
        assert type(from_node) is type(from_eval) and from_node.name == from_eval.name == name
        assert [r.scores for r in from_node.check(images, 0.01)] == [r.scores for r in from_eval.check(images, 0.01)]


def test_unknown_name_fails_closed_naming_the_folder(tmp_path):
    with pytest.raises(SafetyCheckerError, match=r"'mine\.safetensors' cannot run: no checker of that name"):
        load_checker("mine.safetensors")
    with use_runtime(Runtime(models=ModelFolders(tmp_path), device="cpu")):
        with pytest.raises(SafetyCheckerError) as error:
            SLDSafetyCheckerLoader().load_checker("mine.safetensors")
    assert str(tmp_path / FOLDER) in str(error.value) and all(n in str(error.value) for n in BUILT_IN)


def test_inside_comfyui_checkers_come_from_its_models_and_extra_paths(tmp_path, monkeypatch):
    """ComfyUI registers every kind its extra_model_paths.yaml names in `folder_paths.folder_names_and_paths`
    (`add_model_folder_path`); concept checkers in such a `safety_checker` folder are listed and loaded."""
    import sys
    import types

    from comfyui_sld.nodes import safety

    models, shared = tmp_path / "models", tmp_path / "shared" / "checkers"
    (models / FOLDER).mkdir(parents=True)
    shared.mkdir(parents=True)
    tiny_checker_file(models / FOLDER / "local.safetensors")
    tiny_checker_file(shared / "shared.safetensors")
    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(models)
    folder_paths.folder_names_and_paths = {FOLDER: ([str(shared)], {".safetensors"})}
    folder_paths.get_folder_paths = lambda kind: list(folder_paths.folder_names_and_paths[kind][0])
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.setitem(sys.modules, "comfy.utils", types.ModuleType("comfy.utils"))  # what in_comfyui() looks for

    names = safety.checker_names()
    assert names[:len(BUILT_IN)] == built_in_names() and {"local.safetensors", "shared.safetensors"} <= set(names)
    assert safety.load_named_checker("shared.safetensors").name == "shared.safetensors"
    del folder_paths.folder_names_and_paths[FOLDER]  # no YAML entry: only ComfyUI's own models/ folder
    assert "shared.safetensors" not in safety.checker_names()
