"""Write a seeded random-weight checkpoint with the full SDXL base 1.0 (or, with --family sdxl-refiner,
SDXL refiner 1.0; with --family sd2-768-v, SD2.1 768-v) architecture, in float16.

ComfyUI recognises SDXL by its exact layer sizes, so checks against a real ComfyUI and the SDXL
benchmark (bench/bench_sdxl.py) need the full-size model (UNet 2.57 G, CLIP-L 123 M, OpenCLIP bigG
695 M, VAE 84 M parameters: about 6.9 GB in float16). Nothing is built in memory: the tensor names and
shapes come from the modules built on the meta device and sld_core's key map (`diffusers_to_ldm`), and
each tensor is drawn and written to the file on its own, so the process stays well under 1 GB.

    python scripts/make_random_sdxl.py OUT.safetensors [--seed 0] [--family sdxl|sdxl-refiner|sd2-768-v]

The refiner is what ComfyUI's model detection calls SDXLRefiner: a 384-channel UNet with 1280-wide
cross-attention and a 2560-wide added conditioning (pooled bigG plus size, crop and aesthetic-score
embeddings), OpenCLIP bigG alone at ``conditioner.embedders.0.model.``, the SDXL VAE.

The weights: each ≥2-D tensor uniform in ±1/√fan_in (the scale of PyTorch's default init, so activations
neither blow up nor vanish in float16), 1-D weights (norm scales) 1, biases 0; tensor i is drawn from
its own generator seeded with (seed, i), so the file is the same on every machine. The images it makes
are noise, but the same noise in ComfyUI, in `sld run` and in diffusers. An SD2 file says it is
v-prediction the way ComfyUI (and sld_core) read it from a single file: one norm bias of the last
output block (`V_MARKER`) is drawn with a standard deviation above 0.09 instead of being 0.
"""
import argparse
import json
import math
import os
import struct
from importlib import resources
from pathlib import Path

import torch

from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm


def config(name):
    text = resources.files("comfyui_sld.sld_core.models").joinpath("configs", name).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_") and k != "architectures"}


FULL_SIZE = {"unet": "sdxl_unet.json", "vae": "sdxl_vae.json", "text_encoder": "sd15_text_encoder.json",
             "text_encoder_2": "sdxl_text_encoder_2.json"}
REFINER_FULL_SIZE = {"unet": "sdxl_refiner_unet.json", "vae": "sdxl_vae.json",
                     "text_encoder_2": "sdxl_text_encoder_2.json"}
SD2_FULL_SIZE = {"unet": "sd2_unet.json", "vae": "sd15_vae.json", "text_encoder": "sd2_text_encoder.json"}
V_MARKER = "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.norm1.bias"


# --family → (sld_core's family name, the component configs of its full-size model)
FAMILIES = {"sdxl": ("SDXL", FULL_SIZE), "sdxl-refiner": ("SDXL refiner", REFINER_FULL_SIZE),
            "sd2-768-v": ("SD2.x", SD2_FULL_SIZE)}


def layout(configs=None, family="sdxl"):
    """[(key, shape)] of a single file of `family` (a --family value), sorted by key: from the components
    of `configs` ({"unet", "vae", and the text encoders the family has: "text_encoder" (CLIP-L; SD2's
    OpenCLIP ViT-H), "text_encoder_2" (bigG)}: diffusers/transformers config dicts; default the
    full-size ones shipped in sld_core) built on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    name, files = FAMILIES[family]
    configs = configs or {part: config(file) for part, file in files.items()}
    text_class = CLIPTextModelWithProjection if name == "SD2.x" else CLIPTextModel
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(configs["unet"])
        vae = AutoencoderKL.from_config(configs["vae"])
        text = {part: cls(CLIPTextConfig.from_dict(configs[part])).state_dict()
                for part, cls in (("text_encoder", text_class), ("text_encoder_2", CLIPTextModelWithProjection))
                if part in configs}
    ldm = diffusers_to_ldm(unet.state_dict(), vae.state_dict(), text.get("text_encoder"), name,
                           text.get("text_encoder_2"))
    return sorted((key, tuple(tensor.shape)) for key, tensor in ldm.items())


def draw(key, shape, seed, index, v_prediction=False):
    """Tensor `index` of the file, float32: see the module docstring for the rule."""
    if key == V_MARKER and v_prediction:
        return torch.empty(shape).uniform_(-0.25, 0.25, generator=torch.Generator().manual_seed(seed))
    if len(shape) < 2:
        return torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)  # norm scales, biases
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    bound = 1.0 / math.sqrt(math.prod(shape[1:]))
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def write(path, entries, seed=0, v_prediction=False):
    """A .safetensors file of float16 tensors `entries` [(key, shape)], each drawn and written on its
    own (the format: an 8-byte little-endian header size, a JSON header of dtypes, shapes and byte
    offsets, then the tensors' bytes in that order); written to a temporary name, then renamed."""
    header, offset = {}, 0
    for key, shape in entries:
        size = math.prod(shape) * 2
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for index, (key, shape) in enumerate(entries):
            f.write(draw(key, shape, seed, index, v_prediction).to(torch.float16).numpy().tobytes())
    os.replace(tmp, path)
    return offset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="output .safetensors path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family", choices=("sdxl", "sdxl-refiner", "sd2-768-v"), default="sdxl")
    args = parser.parse_args(argv)
    sd2 = args.family == "sd2-768-v"
    entries = layout(family=args.family)
    size = write(args.out, entries, args.seed, v_prediction=sd2)
    print(f"{args.out}: {len(entries)} tensors, {size / 2**30:.2f} GiB (seed {args.seed})")


if __name__ == "__main__":
    main()
