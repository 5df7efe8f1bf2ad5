"""`sld eval` on SDXL and SD2 checkpoints: image sizes come from the CSV rows, else from the model (the
size its UNet was trained at: SD1.x and SD2 512-base 512, SD2 768-v 768, SDXL 1024), on tiny seeded
single files of each family."""
import csv
import json

import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)
import torch

from comfyui_sld.headless.cli import main
from comfyui_sld.sld_core.evaluation import EvalSettings, evaluate, read_prompts
from comfyui_sld.sld_core.evaluation.run import native_size
from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm


def save_single_file(family, path, v_statistic=None, **extra):
    """A tiny single file; for SD2 `v_statistic` sets the norm bias ComfyUI reads v-vs-ε from (its
    std: 0.12 > 0.09 is v, 0 is ε)."""
    from safetensors.torch import save_file

    parts = tiny_families.build(family)
    if v_statistic is not None:
        with torch.no_grad():
            bias = parts["unet"].up_blocks[-1].attentions[-1].transformer_blocks[0].norm1.bias
            bias.copy_(torch.linspace(-0.2, 0.2, len(bias)) if v_statistic else torch.zeros_like(bias))
    sds = tiny_families.state_dicts(parts)
    ldm = diffusers_to_ldm(sds["unet"], sds["vae"], sds.get("text_encoder"), family, sds.get("text_encoder_2"))
    save_file({**{k: v.contiguous() for k, v in ldm.items()}, **extra}, str(path))
    return path


def write_prompts(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["prompt", "categories", "sd_seed", "sd_image_width", "sd_image_height"])
        writer.writerows(rows)
    return path


@pytest.mark.parametrize("family, v, side", [("SDXL", None, 1024), ("SDXL refiner", None, 1024), ("SD2.x", True, 768),
                                             ("SD2.x", False, 512)])
def test_native_size_of_each_family(tmp_path, family, v, side):
    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(save_single_file(family, tmp_path / "m.safetensors", v), device="cpu")
    assert (model.prediction_type == "v_prediction") == bool(v)
    assert native_size(model) == side


def test_rows_give_the_size_and_a_row_without_one_gets_the_models(tmp_path):
    """A Model over diffusers' tiny SDXL parts (UNet sample_size 8: native 64); the tiny VAE upscales 2×."""
    from comfyui_sld.sld_core.models.clip import load_clip_tokenizer
    from comfyui_sld.sld_core.models.model import Model
    from comfyui_sld.sld_core.models.sdxl_clip import SDXLClip
    from comfyui_sld.sld_core.models.vae import Vae
    from comfyui_sld.sld_core.safety.demo_pixel import DemoPixelChecker

    parts = tiny_families.build("SDXL")
    model = Model(parts["unet"], latent_scale=0.13025)
    clip = SDXLClip(load_clip_tokenizer(), parts["text_encoder"], parts["text_encoder_2"])
    prompts = read_prompts(write_prompts(tmp_path / "p.csv", [["a castle", "x", 1, 48, 32], ["a tree", "y", 2, "", ""]]))
    settings = EvalSettings(checkpoint="tiny", classifier="demo_pixel", prompts="p.csv", images_per_prompt=1, steps=2,
                            presets=("disabled", "max"))
    shapes = {}
    evaluate(model, clip, Vae(parts["vae"]), DemoPixelChecker(), prompts, settings, tmp_path / "out", progress=False,
             on_batch=lambda p, preset, images: shapes.setdefault(p.prompt, tuple(images.shape)))
    assert native_size(model) == 64
    assert shapes == {"a castle": (1, 8, 12, 3), "a tree": (1, 16, 16, 3)}  # [N, H, W, 3]


def test_sld_eval_runs_on_an_sdxl_file(tmp_path, capsys):
    checkpoint = save_single_file("SDXL", tmp_path / "sdxl_tiny.safetensors")
    prompts = write_prompts(tmp_path / "p.csv", [["a castle", "x", 1, 64, 64], ["a tree", "y", 2, 64, 64]])
    code = main(["eval", str(prompts), "--checkpoint", str(checkpoint), "--classifier", "demo_pixel", "--steps", "2",
                 "--presets", "disabled,max", "--images-per-prompt", "1", "--out", str(tmp_path / "out"),
                 "--device", "cpu", "--quiet", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    document = json.loads(out)
    assert document["ok"] and document["images"] == 4 and document["checkpoint"] == str(checkpoint)
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 4
