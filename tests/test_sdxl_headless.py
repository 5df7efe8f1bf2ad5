"""`sld run` on SDXL, SDXL-refiner and SD2 single files (tiny seeded ones), and the refusal of a Flux file.

The shipped sld_txt2img workflow, unchanged but for the checkpoint name, SLD Max and two steps: what a
user does with an SDXL checkpoint in models/checkpoints.
"""
from pathlib import Path

import numpy as np
import pytest

import tiny_families  # tests/tiny_families.py (pytest's pythonpath in pyproject.toml)
import torch
from PIL import Image

from comfyui_sld.headless.cli import main
from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm

TXT2IMG = Path(__file__).resolve().parents[1] / "workflows" / "api" / "sld_txt2img.json"
LOADER, SAMPLER = "1", "6"  # SLDCheckpointLoader, SLDKSampler in sld_txt2img


def run(tmp_path, capsys, name):
    out = tmp_path / "out"
    code = main([str(a) for a in (
        "run", TXT2IMG, "--set", f"{SAMPLER}.steps=2", "--set", f"{SAMPLER}.sld_preset=max",
        "--set", f"{LOADER}.ckpt_name={name}", "--models-dir", tmp_path / "models", "--output-dir", out,
        "--device", "cpu", "--quiet")])
    return code, capsys.readouterr().err, sorted(out.rglob("*.png")) if out.exists() else []


@pytest.mark.parametrize("family", ["SDXL", "SDXL refiner", "SD2.x"])
def test_sld_run_on_a_single_file_of_the_family(family, tmp_path, capsys):
    from safetensors.torch import save_file

    sds = tiny_families.state_dicts(tiny_families.build(family))
    ldm = diffusers_to_ldm(sds["unet"], sds["vae"], sds.get("text_encoder"), family, sds.get("text_encoder_2"))
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(folder / "tiny.safetensors"))
    code, err, pngs = run(tmp_path, capsys, "tiny.safetensors")
    assert code == 0, err
    [png] = pngs
    pixels = np.asarray(Image.open(png))
    assert pixels.shape == (16, 16, 3) and pixels.std() > 0  # 64² → 8² latent cells; the tiny VAE upscales 2×


def test_a_flux_file_is_refused_by_name_and_nothing_is_written(tmp_path, capsys):
    from safetensors.torch import save_file

    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    keys = {"model.diffusion_model.double_blocks.0.img_attn.qkv.weight": (9, 3),
            "model.diffusion_model.img_in.weight": (3, 64)}
    save_file({k: torch.zeros(s) for k, s in keys.items()}, str(folder / "flux1-schnell.safetensors"))
    code, err, pngs = run(tmp_path, capsys, "flux1-schnell.safetensors")
    assert code != 0 and pngs == []
    assert "Flux checkpoints are not supported" in err and "flux1-schnell.safetensors" in err


def test_model_sampling_discrete_reads_a_v_model_saved_without_its_marker(tmp_path, capsys):
    """An SDXL v-prediction file without ComfyUI's ``v_pred`` key loads as ε; a ModelSamplingDiscrete
    (v_prediction) node in the workflow gives the image of the same weights saved with the key."""
    import json

    from safetensors.torch import save_file

    sds = tiny_families.state_dicts(tiny_families.build("SDXL"))
    ldm = {k: v.contiguous() for k, v in diffusers_to_ldm(sds["unet"], sds["vae"], sds["text_encoder"], "SDXL",
                                                             sds["text_encoder_2"]).items()}
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    save_file(ldm, str(folder / "plain.safetensors"))
    save_file({**ldm, "v_pred": torch.tensor([])}, str(folder / "marked.safetensors"))
    workflow = json.loads(TXT2IMG.read_text())
    workflow["9"] = {"class_type": "ModelSamplingDiscrete",
                     "inputs": {"model": [LOADER, 0], "sampling": "v_prediction", "zsnr": False}}
    workflow[SAMPLER]["inputs"]["model"] = ["9", 0]
    patched = tmp_path / "v.json"
    patched.write_text(json.dumps(workflow))

    def image(workflow_file, name, out):
        code = main([str(a) for a in (
            "run", workflow_file, "--set", f"{SAMPLER}.steps=2", "--set", f"{LOADER}.ckpt_name={name}",
            "--models-dir", tmp_path / "models", "--output-dir", tmp_path / out, "--device", "cpu", "--quiet")])
        assert code == 0, capsys.readouterr().err
        [png] = sorted((tmp_path / out).rglob("*.png"))
        return np.asarray(Image.open(png))

    overridden = image(patched, "plain.safetensors", "a")
    assert np.array_equal(overridden, image(TXT2IMG, "marked.safetensors", "b"))
    assert not np.array_equal(overridden, image(TXT2IMG, "plain.safetensors", "c"))


def sdxl_workflow(ckpt, positive, negative):
    """A plain SDXL graph: loader → two text encodes → KSampler → VAEDecode → SaveImage."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": positive, "3": negative,
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0], "seed": 7,
            "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "sdxl"}},
    }


def encode(text):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": ["1", 1], "text": text}}


def encode_sdxl(text, size=64, crop=0, target=64):
    return {"class_type": "CLIPTextEncodeSDXL", "inputs": {
        "clip": ["1", 1], "width": size, "height": size, "crop_w": crop, "crop_h": crop, "target_width": target,
        "target_height": target, "text_g": text, "text_l": text}}


def encode_refiner(text, ascore):
    return {"class_type": "CLIPTextEncodeSDXLRefiner",
            "inputs": {"clip": ["1", 1], "ascore": ascore, "width": 64, "height": 64, "text": text}}


@pytest.mark.parametrize("family", ["SDXL", "SDXL refiner"])
def test_sdxl_text_encode_nodes_follow_comfyuis_defaults(family, tmp_path, capsys):
    """The SDXL encoders given ComfyUI's defaults for a 64² latent (size 64, no crop, target = size; the
    refiner's 6 / 2.5 aesthetic scores) give CLIPTextEncode's image; other sizes change it."""
    import json

    from safetensors.torch import save_file

    tiny = tiny_families
    sds = tiny.state_dicts(tiny.build(family))
    ldm = diffusers_to_ldm(sds["unet"], sds["vae"], sds.get("text_encoder"), family, sds.get("text_encoder_2"))
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(folder / "m.safetensors"))

    def image(positive, negative, out):
        path = tmp_path / f"{out}.json"
        path.write_text(json.dumps(sdxl_workflow("m.safetensors", positive, negative)))
        code = main([str(a) for a in ("run", path, "--models-dir", tmp_path / "models", "--output-dir",
                                      tmp_path / out, "--device", "cpu", "--quiet")])
        assert code == 0, capsys.readouterr().err
        [png] = sorted((tmp_path / out).rglob("*.png"))
        return np.asarray(Image.open(png))

    plain = image(encode("a castle"), encode("blurry"), "plain")
    if family == "SDXL":
        same = image(encode_sdxl("a castle"), encode_sdxl("blurry"), "same")
        other = image(encode_sdxl("a castle", size=1024, crop=32, target=512), encode_sdxl("blurry"), "other")
    else:
        same = image(encode_refiner("a castle", 6.0), encode_refiner("blurry", 2.5), "same")
        other = image(encode_refiner("a castle", 9.0), encode_refiner("blurry", 2.5), "other")
    assert np.array_equal(same, plain)
    assert not np.array_equal(other, plain)
