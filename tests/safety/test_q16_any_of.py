"""Q16 from a folder (a tiny random CLIP stands in for ViT-L/14: the arithmetic, against transformers'
CLIPModel computed independently), the error that says what to install where, and checkers joined by
+ (flagged when any flags) as `sld eval --classifier q16+nudenet` uses them."""
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from comfyui_sld.sld_core.errors import SafetyCheckerError
from comfyui_sld.sld_core.safety.any_of import AnyOf
from comfyui_sld.sld_core.safety.demo_pixel import load_demo_pixel
from comfyui_sld.sld_core.safety.nudenet_detector import load_nudenet
from comfyui_sld.sld_core.safety.q16 import load_q16

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nudenet_positive.png"


@pytest.fixture(scope="module")
def q16_folder(tmp_path_factory):
    from safetensors.torch import save_file
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("q16")
    torch.manual_seed(0)
    config = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2),
                        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=32, patch_size=8), projection_dim=16)
    model = CLIPModel(config).eval()
    model.save_pretrained(folder / "clip-vit-large-patch14")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder / "clip-vit-large-patch14")
    prompts = torch.randn(2, 16)
    save_file({"prompts": prompts}, folder / "prompts.safetensors")
    return folder, model, prompts


def test_q16_is_clips_softmax_over_its_two_prompts(q16_folder):
    from transformers import CLIPImageProcessor

    folder, clip, prompts = q16_folder
    checker = load_q16(folder)
    images = torch.rand(5, 48, 40, 3, generator=torch.Generator().manual_seed(1))
    results = checker.check(images)
    pixels = (images.numpy() * 255).round().astype(np.uint8)
    inputs = CLIPImageProcessor.from_pretrained(folder / "clip-vit-large-patch14")(
        [Image.fromarray(p) for p in pixels], return_tensors="pt").pixel_values
    with torch.no_grad():
        features = clip.get_image_features(pixel_values=inputs)
        features = getattr(features, "pooler_output", features)  # transformers 5 may wrap it
    cos = torch.nn.functional.normalize(features, dim=-1) @ torch.nn.functional.normalize(prompts, dim=-1).T
    expected = (100 * cos.double()).softmax(-1)[:, 1]
    assert [r.scores["inappropriate"] for r in results] == pytest.approx(expected.tolist(), abs=1e-5)
    assert [r.flagged for r in results] == (expected > 0.5).tolist()


@pytest.mark.parametrize("remove, named", [("clip-vit-large-patch14", "clip-vit-large-patch14/"),
                                           ("prompts.safetensors", "prompts.safetensors or prompts.npy")])
def test_q16_without_its_weights_says_what_to_install_where(q16_folder, tmp_path, remove, named):
    import shutil

    folder = tmp_path / "q16"
    shutil.copytree(q16_folder[0], folder)
    target = folder / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(SafetyCheckerError) as error:
        load_q16(folder)
    message = str(error.value)
    assert f"lacks {named}" in message and "openai/clip-vit-large-patch14" in message
    assert f"{folder}/clip-vit-large-patch14/" in message and "ml-research/Q16" in message


def test_cli_q16_absent_is_an_error_not_a_fallback(tmp_path, capsys):
    from comfyui_sld.headless.cli import main

    models = tmp_path / "models"
    (models / "safety_checker").mkdir(parents=True)
    code = main(["eval", "--classifier", "q16+nudenet", "--models-dir", str(models), "--limit", "1", "--steps", "1",
                 "--images-per-prompt", "1", "--presets", "disabled", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and "'q16'" in err and f"{models / 'safety_checker' / 'q16'}/clip-vit-large-patch14/" in err
    assert not (tmp_path / "out" / "results.jsonl").exists() or not (tmp_path / "out" / "results.jsonl").read_text()


def test_any_of_flags_what_either_checker_flags():
    magenta = torch.zeros(1, 64, 64, 3)
    magenta[..., 16:48, 16:48, :] = torch.tensor([230, 40, 230]) / 255
    with Image.open(FIXTURE) as image:
        nude = torch.from_numpy(np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32) / 255)[None]
        nude_big = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255)[None]
    grey = torch.full((1, 64, 64, 3), 0.5)
    both = AnyOf([load_demo_pixel(), load_nudenet()])
    assert both.name == "demo_pixel+nudenet"
    [m], [g] = both.check(magenta), both.check(grey)
    [n] = both.check(nude_big)
    assert m.flagged and m.details["flagged_by"] == ["demo_pixel"] and "demo_pixel:unsafe_fraction" in m.scores
    assert n.flagged and "nudenet" in n.details["flagged_by"] and "nudenet:BUTTOCKS_EXPOSED" in n.concepts
    assert not g.flagged and g.details["flagged_by"] == []
    assert nude.shape == magenta.shape  # (same-size batches are what eval gives it)
