"""LoraLoader, LoraLoaderModelOnly, CLIPSetLastLayer and VAELoader headless, on the embedded demo model.

* Through the executor: a LoRA at strength 0 gives the image of no LoRA; at strength 1 another one; and
  the loader's cached MODEL/CLIP are untouched by a LoRA run (the plain graph, re-run in the same
  executor with the loader reused from the cache, gives its first image again).
* VAELoader: a VAE file in the original layout and the same weights in diffusers' layout decode as a
  VAE built from those weights directly.
* Bad inputs (`sld run`): a LoRA or VAE name not in its folder, a corrupt or truncated file, a LoRA of
  another family, a DoRA file, a model-only LoRA with no UNet layer, a 16-channel VAE: each one line
  naming the node and the input, no traceback, nothing written. A LoRA with some keys of no layer of
  the model runs and says how many were not loaded.
"""
import json

import numpy as np
import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)
import torch

from comfyui_sld.headless.run import Executor
from comfyui_sld.nodes.context import Runtime, use_runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm, unet_ldm_names
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

DEMO = "sld_demo.safetensors"
LORA = "demo_lora.safetensors"


def low_rank_lora(modules, names, seed, scale=0.5):
    """A kohya-format rank-2 LoRA: {name: module} with seeded up/down (conv kernels kept) and alpha 1."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, weight in ((n, modules[m].weight) for n, m in names.items()):
        kernel = weight.shape[2:]
        state[f"{name}.lora_down.weight"] = torch.randn(2, weight.shape[1], *kernel, generator=g) * scale
        state[f"{name}.lora_up.weight"] = torch.randn(weight.shape[0], 2, *([1] * len(kernel)), generator=g) * scale
        state[f"{name}.alpha"] = torch.tensor(1.0)
    return state


def demo_lora(model, clip, seed=0):
    unet = dict(model.unet.named_modules())
    text = dict(clip.text_encoder.named_modules())
    names = {f"lora_unet_{n.replace('.', '_')}": n for n, m in unet.items()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and ("attentions" in n or "resnets" in n)}
    text_names = {f"lora_te_text_model_{n.replace('.', '_')}": n for n, m in text.items()
                  if isinstance(m, torch.nn.Linear) and n.startswith("encoder.layers.")}
    return low_rank_lora(unet, names, seed) | low_rank_lora(text, text_names, seed + 1)


@pytest.fixture(scope="module")
def demo():
    from comfyui_sld.sld_core.demo import load_demo

    return load_demo("cpu")


@pytest.fixture(scope="module")
def models(tmp_path_factory, demo):
    """A models folder: LoRAs (good, partial, broken, another family's) and VAE files for the demo model."""
    from safetensors.torch import save_file

    model, clip, vae = demo
    root = tmp_path_factory.mktemp("model_nodes") / "models"
    loras, vaes = root / "loras", root / "vae"
    loras.mkdir(parents=True)
    vaes.mkdir()
    lora = demo_lora(model, clip)
    save_file(lora, str(loras / LORA))
    save_file(lora | {"lora_unet_not_a_layer.lora_up.weight": torch.zeros(4, 2),
                      "lora_unet_not_a_layer.lora_down.weight": torch.zeros(2, 4)}, str(loras / "partial.safetensors"))
    save_file({k: v for k, v in lora.items() if k.startswith("lora_te_")}, str(loras / "text_only.safetensors"))
    save_file(lora | {"lora_unet_conv_in.dora_scale": torch.ones(1)}, str(loras / "dora.safetensors"))
    data = (loras / LORA).read_bytes()
    (loras / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    (loras / "corrupt.safetensors").write_bytes(b"this is not a safetensors file" * 10)
    sdxl = tiny_families.build("SDXL")
    ldm = {d: l for l, d in unet_ldm_names([k for k, _ in sdxl["unet"].named_parameters()]).items()}
    sdxl_names = {"lora_unet_" + ldm[n + ".weight"][:-7].replace(".", "_"): n for n, m in sdxl["unet"].named_modules()
                  if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    save_file(low_rank_lora(dict(sdxl["unet"].named_modules()), sdxl_names, 5), str(loras / "sdxl_tiny.safetensors"))

    perturbed = perturbed_vae_state(vae)
    unet_sd, text_sd = model.unet.state_dict(), clip.text_encoder.state_dict()
    ldm_vae = {k.removeprefix("first_stage_model."): v.contiguous()
               for k, v in diffusers_to_ldm(unet_sd, perturbed, text_sd).items() if k.startswith("first_stage_model.")}
    save_file(ldm_vae, str(vaes / "demo_vae_ldm.safetensors"))
    save_file({k: v.contiguous() for k, v in perturbed.items()}, str(vaes / "demo_vae_diffusers.safetensors"))
    wide = {k: v for k, v in ldm_vae.items()}
    wide["decoder.conv_in.weight"] = torch.zeros(wide["decoder.conv_in.weight"].shape[0], 16, 3, 3)
    save_file(wide, str(vaes / "flux_like_vae.safetensors"))
    save_file(lora, str(vaes / "a_lora_in_the_vae_folder.safetensors"))
    return root


def perturbed_vae_state(vae):
    g = torch.Generator().manual_seed(7)
    return {k: v + 0.01 * torch.randn(v.shape, generator=g) for k, v in vae.autoencoder.state_dict().items()}


def graph(lora=None, strength=1.0, clip_skip=None, model_only=False, vae_name=None):
    """Demo loader (→ LoraLoader / LoraLoaderModelOnly) (→ CLIPSetLastLayer) → texts → KSampler → decode → save."""
    p = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": DEMO}}}
    model, clip = ["1", 0], ["1", 1]
    if lora and model_only:
        p["10"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": lora,
                                                                   "strength_model": strength}}
        model = ["10", 0]
    elif lora:
        p["10"] = {"class_type": "LoraLoader", "inputs": {"model": model, "clip": clip, "lora_name": lora,
                                                          "strength_model": strength, "strength_clip": strength}}
        model, clip = ["10", 0], ["10", 1]
    if clip_skip:
        p["11"] = {"class_type": "CLIPSetLastLayer", "inputs": {"clip": clip, "stop_at_clip_layer": clip_skip}}
        clip = ["11", 0]
    vae = ["1", 2]
    if vae_name:
        p["12"] = {"class_type": "VAELoader", "inputs": {"vae_name": vae_name}}
        vae = ["12", 0]
    p["2"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle on a blue square", "clip": clip}}
    p["3"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": clip}}
    p["5"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    p["6"] = {"class_type": "KSampler", "inputs": {"model": model, "seed": 3, "steps": 2, "cfg": 7.0,
                                                   "sampler_name": "euler", "scheduler": "normal", "positive": ["2", 0],
                                                   "negative": ["3", 0], "latent_image": ["5", 0], "denoise": 1.0}}
    p["7"] = {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": vae}}
    p["8"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "models"}}
    return p


def test_lora_in_the_executor(models, tmp_path):
    executor = Executor(Runtime(models=ModelFolders(models), output_dir=tmp_path, device="cpu"), progress=False)

    def run(prompt):
        result = executor.run(prompt)
        return pixels(result.images[-1]["path"] if isinstance(result.images[-1], dict) else result.images[-1]).astype(int), result

    plain, _ = run(graph())
    zero, _ = run(graph(LORA, strength=0.0))
    full, _ = run(graph(LORA, strength=1.0))
    model_only, _ = run(graph(LORA, strength=1.0, model_only=True))
    again, result = run(graph())
    assert "1" in result.cached  # the loader's outputs, reused from the cache
    assert np.array_equal(zero, plain)
    assert np.abs(full - plain).max() > 10 and np.abs(model_only - full).max() > 0
    assert np.array_equal(again, plain)  # the LoRA runs left the cached MODEL and CLIP as they were


def test_vae_loader_reads_both_layouts(models, demo):
    from diffusers import AutoencoderKL

    from comfyui_sld.nodes.loaders import VAELoader
    from comfyui_sld.sld_core.models.vae import Vae

    reference = AutoencoderKL.from_config(demo[2].autoencoder.config)
    reference.load_state_dict(perturbed_vae_state(demo[2]))
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = Vae(reference.eval()).decode(latent)
    with use_runtime(Runtime(models=ModelFolders(models), device="cpu")):
        for name in ("demo_vae_ldm.safetensors", "demo_vae_diffusers.safetensors"):
            (vae,) = VAELoader().load_vae(name)
            assert torch.allclose(vae.decode(latent), expected, atol=1e-6, rtol=0), name
    assert not torch.allclose(demo[2].decode(latent), expected, atol=1e-3)  # not the checkpoint's own VAE


BAD = [
    (dict(lora="missing.safetensors"), "10", "lora_name", "not in"),
    (dict(lora="corrupt.safetensors"), "10", "lora_name", "is not a readable .safetensors file"),
    (dict(lora="truncated.safetensors"), "10", "lora_name", "is not a readable .safetensors file"),
    (dict(lora="sdxl_tiny.safetensors"), "10", "lora_name", "does not fit this model"),
    (dict(lora="dora.safetensors"), "10", "lora_name", "DoRA"),
    (dict(lora="text_only.safetensors", model_only=True), "10", "lora_name", "has no layer of the UNet of this model"),
    (dict(vae_name="missing_vae.safetensors"), "12", "vae_name", "not in"),
    (dict(vae_name="flux_like_vae.safetensors"), "12", "vae_name", "16 latent channels"),
    (dict(vae_name="a_lora_in_the_vae_folder.safetensors"), "12", "vae_name", "is not a VAE"),
]


@pytest.mark.parametrize("case,node,input_name,expected", BAD, ids=[str(c[0]) for c in BAD])
def test_bad_model_inputs_name_node_and_input(wf, models, tmp_path, case, node, input_name, expected):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph(**case)))
    code, _, err = wf.cli("run", path, "--models-dir", models, "--output-dir", tmp_path / "out", "--device", "cpu",
                          "--quiet")
    assert code != 0
    [line] = [line for line in err.splitlines() if f"node {node} " in line or f"node {node}," in line or
              line.strip().startswith(f"{node} ")] or [err]
    assert input_name in line and expected in line, err
    assert "Traceback" not in err
    assert wf.files_under(tmp_path / "out") == []


def test_a_partly_matching_lora_runs_and_says_how_many_keys_were_not_loaded(wf, models, tmp_path, caplog):
    path = tmp_path / "graph.json"
    path.write_text(json.dumps(graph("partial.safetensors")))
    code, _, err = wf.cli("run", path, "--models-dir", models, "--output-dir", tmp_path / "out", "--device", "cpu",
                          "--quiet")
    assert code == 0, err
    assert "2 of its" in caplog.text + err and "were not loaded" in caplog.text + err
    assert len(wf.files_under(tmp_path / "out")) == 1


def test_clip_skip_changes_the_image(models, tmp_path):
    executor = Executor(Runtime(models=ModelFolders(models), output_dir=tmp_path, device="cpu"), progress=False)
    images = [executor.run(graph(clip_skip=stop)).images[-1] for stop in (None, -1, -2)]
    plain, last, skipped = (pixels(i["path"] if isinstance(i, dict) else i).astype(int) for i in images)
    assert np.array_equal(plain, last)  # SD1.x: -1 is the default
    assert np.abs(plain - skipped).max() > 0


def test_loras_and_vaes_of_extra_model_paths_are_listed(tmp_path):
    comfyui, elsewhere = tmp_path / "ComfyUI", tmp_path / "elsewhere"
    for folder, name in ((comfyui / "models" / "loras", "a.safetensors"), (elsewhere / "l", "b.safetensors"),
                         (elsewhere / "v", "c.safetensors")):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(b"")
    (comfyui / "extra_model_paths.yaml").write_text(f"mine:\n  base_path: {elsewhere}\n  loras: l\n  vae: v\n")
    folders = ModelFolders.from_comfyui(comfyui)
    assert folders.names("loras") == ["a.safetensors", "b.safetensors"]
    assert folders.names("vae") == ["c.safetensors"]
