"""Write a seeded random-weight checkpoint with the full Stable Diffusion 1.5 architecture.

ComfyUI recognises an SD1.5 checkpoint only by its exact layer sizes, so checks against a real
ComfyUI (scripts/comfyui-check) need the full-size model; random weights make a ~2 GB fp16 file that
any machine can build offline in about a minute, with no download. The images it makes are noise, but
the same noise in ComfyUI and in `sld run`, which is what the check compares.

    python scripts/make_random_sd15.py OUT.safetensors [--seed 0]

Components are built with diffusers/transformers from the SD1.5 configs that ship in sld_core and
converted to the original single-file layout with sld_core's own key map (`diffusers_to_ldm`).
"""
import argparse
import json
from importlib import resources

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel

from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm


def config(name):
    text = resources.files("comfyui_sld.sld_core.models").joinpath("configs", name).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def build(seed):
    """Seeded random SD1.5 UNet, VAE and CLIP-L text encoder state dicts (diffusers/transformers layout)."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(config("sd15_unet.json")).state_dict()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL.from_config(config("sd15_vae.json")).state_dict()
    torch.manual_seed(seed + 2)
    text = CLIPTextModel(CLIPTextConfig.from_dict(config("sd15_text_encoder.json"))).state_dict()
    return unet, vae, text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output .safetensors path")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with torch.no_grad():
        state = diffusers_to_ldm(*build(args.seed))
    state = {k: v.to(torch.float16).contiguous() if v.is_floating_point() else v.contiguous() for k, v in state.items()}
    save_file(state, args.out)
    size = sum(v.numel() * v.element_size() for v in state.values())
    print(f"{args.out}: {len(state)} tensors, {size / 2**30:.2f} GiB (seed {args.seed})")


if __name__ == "__main__":
    main()
