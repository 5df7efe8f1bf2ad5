"""Bad input around SDXL, refused through `sld run` in one line naming the node, the input, the
checkpoint and what was found, with nothing written: the refiner's CLIP in CLIPTextEncodeSDXL (a
base-only slot), conditionings from another checkpoint's CLIP given to a sampler, and a VAE that does
not belong with its UNet (refused when the checkpoint loads). Tiny seeded single files named as the
official ones, in a temporary models folder."""
import json

import pytest
import tiny_families  # tests/tiny_families.py (pytest's pythonpath)
import torch

from comfyui_sld.headless.cli import main
from comfyui_sld.sld_core.errors import CheckpointError
from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm

BASE, REFINER, SD2 = "sd_xl_base_1.0.safetensors", "sd_xl_refiner_1.0.safetensors", "v2-1_768-ema-pruned.safetensors"


def single_file(parts, family):
    sds = tiny_families.state_dicts(parts)
    ldm = diffusers_to_ldm(sds["unet"], sds["vae"], sds.get("text_encoder"), family, sds.get("text_encoder_2"))
    return {k: v.contiguous() for k, v in ldm.items()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("refusals") / "models"
    (folder / "checkpoints").mkdir(parents=True)
    for name, family in ((BASE, "SDXL"), (REFINER, "SDXL refiner"), (SD2, "SD2.x")):
        save_file(single_file(tiny_families.build(family), family), str(folder / "checkpoints" / name))
    parts = tiny_families.build("SDXL")  # with a 16-channel VAE, as SD3's and Flux's
    torch.manual_seed(0)
    parts["vae"] = AutoencoderKL(**dict(tiny_families.tiny_vae_config(), latent_channels=16, scaling_factor=0.13025))
    save_file(single_file(parts, "SDXL"), str(folder / "checkpoints" / "sdxl_with_flux_vae.safetensors"))
    return folder


def loader(node_id, name):
    return {node_id: {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": name}}}


def encode(clip, text="a castle"):
    return {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": text}}


def graph(model, positive, negative, safety=None):
    """Loaders "b" (base), "r" (refiner), "s" (SD2) → SLDKSampler (or KSampler without a safety concept) →
    VAEDecode → SaveImage."""
    nodes = {**loader("b", BASE), **loader("r", REFINER), **loader("s", SD2), "p": positive, "n": negative,
             "e": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}}
    sampling = {"model": model, "positive": ["p", 0], "negative": ["n", 0], "latent_image": ["e", 0], "seed": 1,
                "steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    if safety is None:
        nodes["k"] = {"class_type": "KSampler", "inputs": sampling}
    else:
        nodes["c"] = safety
        nodes["k"] = {"class_type": "SLDKSampler", "inputs": {
            **sampling, "safety_concept": ["c", 0], "sld_preset": "max", "sld_guidance_scale": 1000.0,
            "sld_warmup_steps": 0, "sld_threshold": 0.01, "sld_momentum_scale": 0.3, "sld_momentum_beta": 0.4}}
    nodes["d"] = {"class_type": "VAEDecode", "inputs": {"samples": ["k", 0], "vae": [model[0], 2]}}
    nodes["w"] = {"class_type": "SaveImage", "inputs": {"images": ["d", 0], "filename_prefix": "refused"}}
    return nodes


def refused(tmp_path, capsys, models, workflow):
    """The problem's line of a failed `sld run`; nothing may be written."""
    path = tmp_path / "w.json"
    path.write_text(json.dumps(workflow))
    out = tmp_path / "out"
    code = main([str(a) for a in ("run", path, "--models-dir", models, "--output-dir", out, "--device", "cpu",
                                  "--quiet")])
    err = capsys.readouterr().err
    assert code == 1, err
    assert not out.exists() or not any(out.rglob("*")), "nothing may be written"
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and lines[0] == "error: the run failed", err  # the CLI's heading, then the problem
    return lines[1]


SDXL_ENCODE = {"width": 1024, "height": 1024, "crop_w": 0, "crop_h": 0, "target_width": 1024,
               "target_height": 1024, "text_g": "a castle", "text_l": "a castle"}


def test_the_refiners_clip_in_clip_text_encode_sdxl(tmp_path, capsys, models):
    positive = {"class_type": "CLIPTextEncodeSDXL", "inputs": {"clip": ["r", 1], **SDXL_ENCODE}}
    line = refused(tmp_path, capsys, models, graph(["r", 0], positive, encode(["r", 1])))
    assert "node p (CLIPTextEncodeSDXL), input 'clip'" in line
    assert f"'{REFINER}' (SDXL refiner) has OpenCLIP bigG only: use CLIPTextEncodeSDXLRefiner" in line


def test_the_base_prompt_given_to_the_refiners_model(tmp_path, capsys, models):
    line = refused(tmp_path, capsys, models, graph(["r", 0], encode(["b", 1]), encode(["r", 1])))
    width, refiner_width = tiny_families.L_WIDTH + tiny_families.G_WIDTH, tiny_families.G_WIDTH
    assert "node k (KSampler), input 'positive'" in line
    assert f"text embeddings {width} wide cannot condition '{REFINER}' (SDXL refiner), which takes {refiner_width}" in line


def test_a_safety_concept_from_the_refiners_clip_given_to_the_base_model(tmp_path, capsys, models):
    line = refused(tmp_path, capsys, models, graph(["b", 0], encode(["b", 1]), encode(["b", 1]), encode(["r", 1])))
    assert "node k (SLDKSampler), input 'safety_concept'" in line and f"'{BASE}' (SDXL)" in line


def test_an_sd2_prompt_given_to_the_refiner_has_the_wrong_pooled_output(tmp_path, capsys, models):
    """SD2's CLIP (tiny: as wide as the refiner's bigG) gives a pooled output of another width."""
    assert tiny_families.H_WIDTH == tiny_families.G_WIDTH  # so the embedding width alone cannot tell
    line = refused(tmp_path, capsys, models, graph(["r", 0], encode(["r", 1]), encode(["s", 1])))
    assert "node k (KSampler), input 'negative'" in line
    assert (f"'{REFINER}' (SDXL refiner) needs each conditioning's pooled output ({tiny_families.G_PROJECTION} "
            f"wide); this one has a pooled output {tiny_families.H_WIDTH} wide") in line


NODES = {  # node class → a call with (model, conditioning) in its positive-like input
    "KSamplerAdvanced": lambda node, m, c: node.sample(m, "enable", 0, 2, 5.0, "euler", "normal", c, c,
                                                        {"samples": torch.zeros(1, 4, 8, 8)}, 0, 2, "disable"),
    "SamplerCustom": lambda node, m, c: node.sample(m, True, 0, 5.0, c, c, None, torch.tensor([1.0, 0.0]),
                                                     {"samples": torch.zeros(1, 4, 8, 8)}),
    "CFGGuider": lambda node, m, c: node.get_guider(m, c, c, 5.0),
    "BasicGuider": lambda node, m, c: node.get_guider(m, c),
    "SLDGuider": lambda node, m, c: node.get_guider(m, c, c, 5.0, c, "max", 1000.0, 0, 0.01, 0.3, 0.4),
    "SLDKSamplerAdvanced": lambda node, m, c: node.sample(m, "enable", 0, 2, 5.0, "euler", "normal", c, c,
                                                           {"samples": torch.zeros(1, 4, 8, 8)}, 0, 2, "disable", c,
                                                           "max", 1000.0, 0, 0.01, 0.3, 0.4),
}


@pytest.mark.parametrize("name", sorted(NODES))
def test_the_composable_sampling_nodes_refuse_the_base_prompt_for_the_refiner(models, name):
    from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS
    from comfyui_sld.nodes.errors import NodeInputError
    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    refiner, _, _ = load_checkpoint(models / "checkpoints" / REFINER, device="cpu")
    _, base_clip, _ = load_checkpoint(models / "checkpoints" / BASE, device="cpu")
    with pytest.raises(NodeInputError, match=f"cannot condition '{REFINER}' \\(SDXL refiner\\)") as error:
        NODES[name](HEADLESS_NODE_CLASS_MAPPINGS[name](), refiner, base_clip.encode("a castle"))
    assert error.value.input_name in ("positive", "conditioning")


def test_a_checkpoint_with_a_16_channel_vae_is_refused_when_it_loads(tmp_path, capsys, models):
    workflow = graph(["b", 0], encode(["b", 1]), encode(["b", 1]))
    workflow["b"]["inputs"]["ckpt_name"] = "sdxl_with_flux_vae.safetensors"
    line = refused(tmp_path, capsys, models, workflow)
    assert "node b (CheckpointLoaderSimple), input 'ckpt_name'" in line and "sdxl_with_flux_vae.safetensors" in line
    assert "mismatched VAE: it has 16 latent channels, the SDXL UNet takes 4 (16 is the SD3/Flux VAE)" in line


def test_an_sdxl_folder_with_an_sd1_vae_is_refused(tmp_path):
    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    parts = tiny_families.build("SDXL")
    parts["vae"].register_to_config(scaling_factor=0.18215)  # the SD1.x/SD2.x VAE's
    for part, module in parts.items():
        module.save_pretrained(tmp_path / "sdxl" / part)
    (tmp_path / "sdxl" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(tmp_path / "sdxl", device="cpu")
    message = str(error.value)
    assert "sdxl" in message and "\n" not in message
    assert "mismatched VAE: its scaling_factor is 0.18215, SDXL's latents use 0.13025" in message
