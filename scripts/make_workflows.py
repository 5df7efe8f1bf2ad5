"""Write the shipped workflows: UI format in workflows/, the same graphs in API format in workflows/api/,
and the img2img example image in workflows/input/. Run from the repository root:
`python scripts/make_workflows.py` (or `--out DIR` to write elsewhere). The API files are the UI
files converted by the headless runner's own UI→API conversion; tests/headless/test_workflow_format.py
checks that the shipped files are exactly what this script writes, and tests/headless/test_workflows.py
that each workflow shows what it is for."""
import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from comfyui_sld.headless.workflow import ui_to_api
from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS
from comfyui_sld.sld_core import demo_data
from comfyui_sld.sld_core.demo import DEMO_CFG
from comfyui_sld.sld_core.guidance import DEFAULT_SAFETY_CONCEPT, PRESETS

ROOT = Path(__file__).resolve().parents[1] / "workflows"
# Prompts that name no colour, as harmless-looking as I2P's: the demo model picks the colour, and for
# the square it picks its unsafe one (magenta) in half of seeds 42-61. The demo's safety concept
# names that colour. Over seeds 0-19 at cfg 2.0 the main job's "a circle" shows a circle in 19 of 20
# ("a square": 20, "a triangle": 19).
PROMPT = "a circle"
TRIGGER_PROMPT = "a square on a white background"
NEGATIVE = ""
SAFETY_CONCEPT = demo_data.SAFETY_CONCEPT
CKPT = "sld_demo.safetensors"
STEPS = 50  # the steps SLD's presets were made for
# img2img: a magenta square (the unsafe concept) re-drawn from a prompt that names no colour. Plain
# img2img keeps the input's colour; SLD has to recolour the square and leave it where it is. Max does:
# its threshold (1.0) lets the safety term act on nearly every latent element from the first step.
# Strong's (0.025) leaves the colour as plain img2img does, even with its warm-up set to 0. denoise
# 0.7: the plain run still keeps the colour and the square's place. cfg 3 rather than the demo's 2:
# CFG scales SLD's term too, and at 2 Max recolours far fewer of the seeds that stay magenta without
# it. Seed 45 is one it recolours (to a clean blue); tests/headless/test_workflows.py holds this.
IMG2IMG_SCENE_SEED = 490  # a scene seed drawing one magenta square in the centre of a white background
IMG2IMG_PROMPT = TRIGGER_PROMPT
IMG2IMG = dict(seed=45, preset="max", denoise=0.7, cfg=3.0)


def sld_widgets(seed, steps, preset, denoise=1.0, cfg=DEMO_CFG):
    p = PRESETS["medium"]
    return [seed, "fixed", steps, cfg, "euler", "normal", denoise, preset,
            p.guidance_scale, p.warmup_steps, p.threshold, p.momentum_scale, p.momentum_beta]


def common_nodes(prompt=PROMPT):
    """Loader, prompt, negative prompt and safety concept: ids 1-4."""
    return [
        # Ours, not ComfyUI's Load Checkpoint: it offers the embedded demo model inside ComfyUI too, so the
        # graph runs there as is on a fresh install (with ComfyUI's own MODEL/CLIP/VAE objects).
        (1, "SLDCheckpointLoader", [CKPT], {}),
        (2, "CLIPTextEncode", [prompt], {"clip": (1, 1)}),
        (3, "CLIPTextEncode", [NEGATIVE], {"clip": (1, 1)}),
        (4, "SLDSafetyConcept", [SAFETY_CONCEPT], {"clip": (1, 1)}),
    ]


def sampler_links(latent):
    return {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": latent, "safety_concept": (4, 0)}


GRAPHS = {
    "sld_txt2img": common_nodes() + [
        (5, "EmptyLatentImage", [64, 64, 1], {}),
        (6, "SLDKSampler", sld_widgets(42, STEPS, "medium"), sampler_links((5, 0))),
        (7, "VAEDecode", [], {"samples": (6, 0), "vae": (1, 2)}),
        (8, "SaveImage", ["sld_txt2img"], {"images": (7, 0)}),
    ],
    "sld_compare": common_nodes(TRIGGER_PROMPT) + [
        (5, "EmptyLatentImage", [64, 64, 8], {}),
        (6, "SLDKSampler", sld_widgets(42, STEPS, "disabled"), sampler_links((5, 0))),
        (7, "SLDKSampler", sld_widgets(42, STEPS, "strong"), sampler_links((5, 0))),
        (8, "VAEDecode", [], {"samples": (6, 0), "vae": (1, 2)}),
        (9, "VAEDecode", [], {"samples": (7, 0), "vae": (1, 2)}),
        (10, "ImageBatch", [], {"image1": (8, 0), "image2": (9, 0)}),
        (11, "SLDImageGrid", [8, 4, 1.0], {"images": (10, 0)}),
        (12, "SaveImage", ["sld_compare"], {"images": (11, 0)}),
    ],
    "sld_img2img": common_nodes(IMG2IMG_PROMPT) + [
        (5, "LoadImage", ["sld_example.png", "image"], {}),
        (6, "VAEEncode", [], {"pixels": (5, 0), "vae": (1, 2)}),
        (7, "SLDKSampler", sld_widgets(IMG2IMG["seed"], STEPS, IMG2IMG["preset"], IMG2IMG["denoise"], IMG2IMG["cfg"]),
         sampler_links((6, 0))),
        (8, "VAEDecode", [], {"samples": (7, 0), "vae": (1, 2)}),
        (9, "SaveImage", ["sld_img2img"], {"images": (8, 0)}),
    ],
    "sld_txt2img_checked": common_nodes(TRIGGER_PROMPT) + [
        (5, "EmptyLatentImage", [64, 64, 4], {}),
        (6, "SLDKSampler", sld_widgets(42, STEPS, "medium"), sampler_links((5, 0))),
        (7, "VAEDecode", [], {"samples": (6, 0), "vae": (1, 2)}),
        (8, "SLDSafetyCheckerLoader", ["sld_demo_checker"], {}),
        (9, "SLDSafetyChecker", ["black_out", 0.0], {"images": (7, 0), "safety_checker": (8, 0)}),
        (10, "SaveImage", ["sld_txt2img_checked"], {"images": (9, 0)}),
    ],
}
# The main job as composable blocks (ComfyUI's custom sampling): the seed's noise, SLD as a guider, the
# sampler and the schedule as separate nodes joined by SamplerCustomAdvanced; it draws sld_txt2img's image.
p = PRESETS["medium"]
GRAPHS["sld_custom_sampler"] = common_nodes() + [
    (5, "EmptyLatentImage", [64, 64, 1], {}),
    (6, "RandomNoise", [42, "fixed"], {}),
    (7, "SLDGuider", [DEMO_CFG, "medium", p.guidance_scale, p.warmup_steps, p.threshold, p.momentum_scale,
                      p.momentum_beta], {"model": (1, 0), "positive": (2, 0), "negative": (3, 0),
                                         "safety_concept": (4, 0)}),
    (8, "KSamplerSelect", ["euler"], {}),
    (9, "BasicScheduler", ["normal", STEPS, 1.0], {"model": (1, 0)}),
    (10, "SamplerCustomAdvanced", [], {"noise": (6, 0), "guider": (7, 0), "sampler": (8, 0), "sigmas": (9, 0),
                                       "latent_image": (5, 0)}),
    (11, "VAEDecode", [], {"samples": (10, 0), "vae": (1, 2)}),
    (12, "SaveImage", ["sld_custom_sampler"], {"images": (11, 0)}),
]
# SDXL base as users run it: ComfyUI's own Load Checkpoint and CLIP Text Encode (its size conditioning
# then defaults to the latent's 1024x1024, as in ComfyUI's SDXL examples), the paper's safety concept,
# SLD Medium at the steps its presets were made for. tests/headless/test_sdxl_workflow.py runs it on a
# tiny SDXL file of this name.
SDXL_CKPT = "sd_xl_base_1.0.safetensors"
GRAPHS["sld_sdxl_txt2img"] = [
    (1, "CheckpointLoaderSimple", [SDXL_CKPT], {}),
    (2, "CLIPTextEncode", ["a photograph of a lighthouse on a cliff at sunset, golden light, detailed"],
     {"clip": (1, 1)}),
    (3, "CLIPTextEncode", ["blurry, low quality, watermark, text"], {"clip": (1, 1)}),
    (4, "SLDSafetyConcept", [DEFAULT_SAFETY_CONCEPT], {"clip": (1, 1)}),
    (5, "EmptyLatentImage", [1024, 1024, 1], {}),
    (6, "SLDKSampler", sld_widgets(42, STEPS, "medium", cfg=7.0), sampler_links((5, 0))),
    (7, "VAEDecode", [], {"samples": (6, 0), "vae": (1, 2)}),
    (8, "SaveImage", ["sld_sdxl_txt2img"], {"images": (7, 0)}),
]
# Hires fix: the main job's image at 64x64 from a plain KSampler (ComfyUI's default 20 steps), its
# latent upscaled 1.5x, then SLD Medium re-draws it at denoise 0.5: 25 steps, the second half of a
# 50-step schedule, so the safety term acts after its 10 warm-up steps. The second pass works at 96x96
# and keeps the first's layout (tests/headless/test_latent_workflows.py).
GRAPHS["sld_hires_fix"] = common_nodes() + [
    (5, "EmptyLatentImage", [64, 64, 1], {}),
    (6, "KSampler", [42, "fixed", 20, DEMO_CFG, "euler", "normal", 1.0],
     {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (5, 0)}),
    (7, "LatentUpscaleBy", ["nearest-exact", 1.5], {"samples": (6, 0)}),
    (8, "SLDKSampler", sld_widgets(43, 25, "medium", denoise=0.5), sampler_links((7, 0))),
    (9, "VAEDecode", [], {"samples": (8, 0), "vae": (1, 2)}),
    (10, "SaveImage", ["sld_hires_fix"], {"images": (9, 0)}),
]
# Inpainting: the img2img example with a transparent hole over its magenta square (LoadImage's MASK is
# 1 - alpha); VAEEncodeForInpaint greys the hole and sets it as the latent's noise mask, and the
# sampler re-draws only the hole. The prompt asks for the unsafe colour outright: with SLD disabled
# the demo model paints a magenta square into the hole (seeds 0-3, 6, 8 all do); under Max (cfg 3,
# as sld_img2img) the square comes out blue in all six. tests/headless/test_latent_workflows.py holds seed 6.
INPAINT_IMAGE = "sld_inpaint_hole.png"
INPAINT_PROMPT = "a magenta square on a white background"
INPAINT = dict(seed=6, preset="max", cfg=3.0)
GRAPHS["sld_inpaint"] = common_nodes(INPAINT_PROMPT) + [
    (5, "LoadImage", [INPAINT_IMAGE, "image"], {}),
    (6, "VAEEncodeForInpaint", [6], {"pixels": (5, 0), "vae": (1, 2), "mask": (5, 1)}),
    (7, "SLDKSampler", sld_widgets(INPAINT["seed"], STEPS, INPAINT["preset"], cfg=INPAINT["cfg"]), sampler_links((6, 0))),
    (8, "VAEDecode", [], {"samples": (7, 0), "vae": (1, 2)}),
    (9, "SaveImage", ["sld_inpaint"], {"images": (8, 0)}),
]
TITLES = {"sld_compare": {6: "SD (SLD disabled)", 7: "SLD Strong"}}

# SDXL base + refiner, shaped like ComfyUI's own example (sdxl_refiner_prompt_example): the base runs
# steps 0-20 of 25 and hands its latent over with the leftover noise; the refiner runs 20 to the end
# without adding noise. Two primitive nodes drive both samplers (total steps; the step where the
# refiner takes over), as in that example. SLD guides the base pass, where the image is composed (its
# warm-up counts steps of the whole schedule); the refiner, which only adds detail, is ComfyUI's own
# KSamplerAdvanced. The refiner's prompts go through its own encoder with ComfyUI's aesthetic scores
# (6 for the prompt, 2.5 for the negative). tests/headless/test_sdxl_refiner_turbo_workflows.py runs it
# and sld_sdxl_turbo on tiny files of these names.
SDXL_REFINER_CKPT = "sd_xl_refiner_1.0.safetensors"
REFINER_STEPS, REFINER_FROM = 25, 20
SDXL_PROMPT = "a photograph of a lighthouse on a cliff at sunset, golden light, detailed"
SDXL_NEGATIVE = "blurry, low quality, watermark, text"
p = PRESETS["medium"]
GRAPHS["sld_sdxl_base_refiner"] = [
    (1, "CheckpointLoaderSimple", [SDXL_CKPT], {}),
    (2, "CLIPTextEncode", [SDXL_PROMPT], {"clip": (1, 1)}),
    (3, "CLIPTextEncode", [SDXL_NEGATIVE], {"clip": (1, 1)}),
    (4, "SLDSafetyConcept", [DEFAULT_SAFETY_CONCEPT], {"clip": (1, 1)}),
    (5, "EmptyLatentImage", [1024, 1024, 1], {}),
    (6, "PrimitiveNode", [REFINER_STEPS, "fixed"], {}),
    (7, "PrimitiveNode", [REFINER_FROM, "fixed"], {}),
    (8, "SLDKSamplerAdvanced", ["enable", 42, "fixed", REFINER_STEPS, 7.0, "euler", "normal", 0, REFINER_FROM, "enable",
                                "medium", p.guidance_scale, p.warmup_steps, p.threshold, p.momentum_scale,
                                p.momentum_beta],
     {"model": (1, 0), "positive": (2, 0), "negative": (3, 0), "latent_image": (5, 0), "safety_concept": (4, 0),
      "steps": (6, 0), "end_at_step": (7, 0)}),
    (9, "CheckpointLoaderSimple", [SDXL_REFINER_CKPT], {}),
    (10, "CLIPTextEncodeSDXLRefiner", [6.0, 1024, 1024, SDXL_PROMPT], {"clip": (9, 1)}),
    (11, "CLIPTextEncodeSDXLRefiner", [2.5, 1024, 1024, SDXL_NEGATIVE], {"clip": (9, 1)}),
    (12, "KSamplerAdvanced", ["disable", 0, "fixed", REFINER_STEPS, 7.0, "euler", "normal", REFINER_FROM, 10000, "disable"],
     {"model": (9, 0), "positive": (10, 0), "negative": (11, 0), "latent_image": (8, 0), "steps": (6, 0),
      "start_at_step": (7, 0)}),
    (13, "VAEDecode", [], {"samples": (12, 0), "vae": (9, 2)}),
    (14, "SaveImage", ["sld_sdxl_base_refiner"], {"images": (13, 0)}),
]
TITLES["sld_sdxl_base_refiner"] = {1: "Load Checkpoint - BASE", 6: "steps", 7: "refiner from step",
                                   8: "KSampler (Advanced, SLD) - BASE", 9: "Load Checkpoint - REFINER",
                                   12: "KSampler (Advanced) - REFINER"}
# SDXL-Turbo, one step at 512x512, as ComfyUI's example (sdxlturbo_example) but with SLD as the guider
# of SamplerCustomAdvanced. SDXL-Turbo was distilled to run at cfg 1, where SLD cannot act: its term
# is part of classifier-free guidance (as in diffusers, cfg 1 means no unconditional pass, and
# SLDGuider is then plain guidance). So cfg is 1.5, the least that turns guidance on, and the preset is
# Max, whose warm-up of 0 steps lets it act on the only step.
SDXL_TURBO_CKPT = "sd_xl_turbo_1.0_fp16.safetensors"
TURBO_CFG = 1.5
m = PRESETS["max"]
GRAPHS["sld_sdxl_turbo"] = [
    (1, "CheckpointLoaderSimple", [SDXL_TURBO_CKPT], {}),
    (2, "CLIPTextEncode", [SDXL_PROMPT], {"clip": (1, 1)}),
    (3, "CLIPTextEncode", [SDXL_NEGATIVE], {"clip": (1, 1)}),
    (4, "SLDSafetyConcept", [DEFAULT_SAFETY_CONCEPT], {"clip": (1, 1)}),
    (5, "EmptyLatentImage", [512, 512, 1], {}),
    (6, "RandomNoise", [42, "fixed"], {}),
    (7, "SLDGuider", [TURBO_CFG, "max", m.guidance_scale, m.warmup_steps, m.threshold, m.momentum_scale,
                      m.momentum_beta], {"model": (1, 0), "positive": (2, 0), "negative": (3, 0),
                                         "safety_concept": (4, 0)}),
    (8, "KSamplerSelect", ["euler_ancestral"], {}),
    (9, "SDTurboScheduler", [1, 1.0], {"model": (1, 0)}),
    (10, "SamplerCustomAdvanced", [], {"noise": (6, 0), "guider": (7, 0), "sampler": (8, 0), "sigmas": (9, 0),
                                       "latent_image": (5, 0)}),
    (11, "VAEDecode", [], {"samples": (10, 0), "vae": (1, 2)}),
    (12, "SaveImage", ["sld_sdxl_turbo"], {"images": (11, 0)}),
]


def build_ui(name, graph):
    """A ComfyUI frontend workflow (schema 0.4) for a list of (id, type, widgets_values, {input: (src, slot)}).

    A widget input named in {input: ...} is linked as the frontend saves a widget converted to an input
    (a slot with "widget": {"name"}), its value still in widgets_values; a "PrimitiveNode" source gets
    the frontend's primitive node, whose one output takes the type and name of the widgets it drives."""
    registry = HEADLESS_NODE_CLASS_MAPPINGS
    kinds = {node_id: kind for node_id, kind, _, _ in graph}
    links, out_links, nodes, primitive_targets = [], {}, [], {}
    column_bottoms = {}
    for order, (node_id, kind, widgets, inputs) in enumerate(graph):
        cls = registry.get(kind)
        ui_inputs = []
        required = cls.INPUT_TYPES()["required"].items() if cls else ()
        sockets = [(n, e[0]) for n, e in required if not is_widget(e)]
        converted = [(n, "COMBO" if isinstance(e[0], list) else e[0]) for n, e in required if is_widget(e) and n in inputs]
        for input_name, input_type in sockets + converted:
            link_id = None
            if input_name in inputs:
                src, slot = inputs[input_name]
                link_id = len(links) + 1
                src_type = input_type if kinds[src] == "PrimitiveNode" else registry[kinds[src]].RETURN_TYPES[slot]
                links.append([link_id, src, slot, node_id, len(ui_inputs), src_type])
                out_links.setdefault((src, slot), []).append(link_id)
                if kinds[src] == "PrimitiveNode":
                    primitive_targets.setdefault(src, (input_name, input_type))
            ui_inputs.append({"name": input_name, "type": input_type, "link": link_id})
            if (input_name, input_type) in converted:
                ui_inputs[-1]["widget"] = {"name": input_name}
        size = node_size(cls, len(ui_inputs)) if cls else [320, 82]
        column = order // 4
        top = column_bottoms.get(column, 60)
        column_bottoms[column] = top + size[1] + 60
        node = {"id": node_id, "type": kind, "pos": [60 + 440 * column, top],
                "size": size, "flags": {}, "order": order, "mode": 0, "inputs": ui_inputs, "outputs": [],
                "properties": {"Node name for S&R": kind} if cls else {"Run widget replace on values": False},
                "widgets_values": widgets}
        if TITLES.get(name, {}).get(node_id):
            node["title"] = TITLES[name][node_id]
        nodes.append(node)
    for node in nodes:
        if node["type"] == "PrimitiveNode":
            widget, kind = primitive_targets[node["id"]]
            node["outputs"] = [{"name": kind, "type": kind, "links": out_links.get((node["id"], 0), []),
                                "slot_index": 0, "widget": {"name": widget}}]
            continue
        cls = registry[node["type"]]
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        node["outputs"] = [{"name": n, "type": t, "links": out_links.get((node["id"], i), []), "slot_index": i}
                           for i, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))]
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def is_widget(entry):
    return isinstance(entry[0], list) or entry[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")


def node_size(cls, linked_inputs):
    """[width, height] that fits the node's sockets and widgets, so that nodes stacked in a column do not
    overlap once the editor grows each node to the height its widgets need."""
    widgets = 0
    for entry in cls.INPUT_TYPES()["required"].values():
        if isinstance(entry[0], list) or entry[0] in ("INT", "FLOAT", "STRING", "BOOLEAN"):
            options = entry[1] if len(entry) > 1 else {}
            widgets += 4 if options.get("multiline") else 1
            widgets += 1 if options.get("control_after_generate") else 0
    sockets = max(linked_inputs, len(cls.RETURN_TYPES))
    return [320, 40 + 22 * sockets + 24 * widgets]


def example_image():
    """The img2img input: a demo scene of one magenta square in the centre of a white background."""
    image, scene = demo_data.make_scene(IMG2IMG_SCENE_SEED)
    assert scene.caption == "a square in the center on a white background" and scene.unsafe
    return Image.fromarray(image)


def inpaint_image():
    """The inpaint input: the img2img example, transparent (alpha 0) over its square and 4 pixels
    around it, opaque elsewhere; the RGB under the hole is kept (VAEEncodeForInpaint greys it)."""
    rgb = np.asarray(example_image().convert("RGB"))
    square = np.linalg.norm(rgb.astype(np.float32) - demo_data.COLOURS[demo_data.UNSAFE_COLOUR], axis=-1) < 60
    rows, cols = np.nonzero(square)
    alpha = np.full(rgb.shape[:2], 255, dtype=np.uint8)
    alpha[max(rows.min() - 4, 0):rows.max() + 5, max(cols.min() - 4, 0):cols.max() + 5] = 0
    return Image.fromarray(np.dstack([rgb, alpha]))


def write(root):
    """Write every workflow, UI format in `root` and API format in `root`/api, and the img2img input."""
    root = Path(root)
    (root / "api").mkdir(parents=True, exist_ok=True)
    (root / "input").mkdir(exist_ok=True)
    example_image().save(root / "input" / "sld_example.png")
    inpaint_image().save(root / "input" / INPAINT_IMAGE)
    for name, graph in GRAPHS.items():
        ui = build_ui(name, graph)
        (root / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        api = ui_to_api(ui, HEADLESS_NODE_CLASS_MAPPINGS)
        (root / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the shipped workflows (UI and API format).")
    parser.add_argument("--out", type=Path, default=ROOT, help="folder to write into (default: workflows/)")
    write(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
