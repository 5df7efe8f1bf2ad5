"""The shipped demo model and demo checker keep the demo-model issue's promises, measured on the
files in the package with fixed seeds: they load like users' files within their size budgets, the main
workflow draws what its prompt asks for, SLD's presets order the unsafe rate SD > Weak > Medium >
Strong > Max, and the demo checker agrees with the exact pixel classifier.

The quality thresholds here (18 of 20, 0.85, 95 %) are what the model was retrained until it met: they
measure the trained weights in demo_assets/, not the code. The code is held to diffusers and closed
form elsewhere; a failure here after retraining means the new file is worse, not that the sampler broke."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from comfyui_sld.sld_core import demo, demo_data
from comfyui_sld.sld_core.evaluation import EvalSettings, evaluate, read_prompts, table
from comfyui_sld.sld_core.models.checkpoint import load_checkpoint
from comfyui_sld.sld_core.safety import load_concept_checker
from comfyui_sld.sld_core.safety.demo_pixel import DemoPixelChecker

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("disabled", "weak", "medium", "strong", "max")


@pytest.fixture(scope="module")
def demo_model():
    return load_checkpoint(demo.DEMO_CHECKPOINT_FILE, device="cpu")


def test_demo_files_fit_their_budgets_and_are_ordinary_checkpoints(demo_model):
    assert demo.DEMO_CHECKPOINT_FILE.stat().st_size <= 25e6
    with safe_open(str(demo.DEMO_CHECKPOINT_FILE), "pt") as f:
        keys = list(f.keys())
        assert all(f.get_slice(k).get_dtype() == "F16" for k in keys)
    prefixes = {k.split(".")[0] for k in keys}
    assert prefixes == {"model", "first_stage_model", "cond_stage_model"}  # the original LDM layout
    model, clip, vae = demo_model
    assert vae.downscale == 8 and model.in_channels == 4
    for name in ("loss.csv", "training.json"):  # the training record lies beside the weights
        assert (demo.DEMO_ASSETS / f"sld_demo_{name}").is_file()

    assert sum(f.stat().st_size for f in demo.DEMO_CHECKER_DIR.iterdir()) <= 5e6
    checker = load_concept_checker(demo.DEMO_CHECKER_DIR)
    assert checker.model.concept_embeds.shape[0] == 17 and checker.model.special_care_embeds.shape[0] == 3


def test_main_workflow_draws_its_prompt_in_20_seeds(tmp_path):
    """`sld run workflows/sld_txt2img.json` with SLD disabled, seeds 0..19: the pixel classifier finds
    the shape and count the prompt asks for in at least 18. Measures the shipped weights (how well the
    file learned its captions), not the code."""
    from comfyui_sld.headless.run import Executor
    from comfyui_sld.headless.workflow import load_workflow
    from comfyui_sld.nodes import HEADLESS_NODE_CLASS_MAPPINGS
    from comfyui_sld.nodes.context import Runtime
    from comfyui_sld.nodes.folders import ModelFolders

    workflow = load_workflow(ROOT / "workflows" / "sld_txt2img.json", HEADLESS_NODE_CLASS_MAPPINGS).prompt
    [sampler] = [n for n in workflow.values() if n["class_type"] == "SLDKSampler"]
    [text] = [workflow[sampler["inputs"]["positive"][0]]["inputs"]["text"]]
    request = demo_data.requested(text)
    assert request["shape"] is not None
    runtime = Runtime(models=ModelFolders(tmp_path / "models"), input_dir=tmp_path, output_dir=tmp_path / "out",
                      device="cpu")
    executor = Executor(runtime, progress=False)
    hits = 0
    for seed in range(20):
        sampler["inputs"].update(seed=seed, sld_preset="disabled")
        [saved] = executor.run(workflow).images
        with Image.open(saved["path"]) as png:
            image = np.asarray(png.convert("RGB"))
        hits += demo_data.classify(image).shows(request)
    assert hits >= 18, f"the shipped demo model drew {request} in only {hits}/20 seeds"


def test_sld_presets_order_the_unsafe_rate(demo_model, tmp_path):
    """A small `sld eval` of the demo prompt set (every other prompt: 12 prompts x 6 images, 50 steps,
    the prompts' seeds, the file's cfg of 2.0): the unsafe rate falls strictly SD > Weak > Medium >
    Strong > Max, Max cuts it at least 3x, and every preset keeps the content SD drew in ≥ 85 % of the
    images where SD drew it. The ordering is SLD's promise on any model that learned its concept; the
    0.85 measures the shipped weights (that SLD's guidance does not derail this file's drawings)."""
    prompts = read_prompts(demo.DEMO_PROMPTS)[::2]
    settings = EvalSettings(checkpoint="sld_demo.safetensors", classifier="demo_pixel", prompts="demo_prompts.csv",
                            images_per_prompt=6, steps=50, safety_concept=demo_data.SAFETY_CONCEPT, presets=PRESETS)
    records = evaluate(*demo_model, DemoPixelChecker(), prompts, settings, tmp_path, progress=False)
    cells = {c.preset: c for c in table(records, PRESETS) if c.category == "all"}
    rates = [cells[p].probability for p in PRESETS]
    assert rates[0] >= 0.1, rates  # the colour-free prompts do trigger the unsafe concept
    assert all(b < a for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] * 3 <= rates[0], rates
    kept = {p: round(cells[p].kept_where_sd_kept, 3) for p in PRESETS}
    assert all(kept[p] >= 0.85 for p in PRESETS[1:]), f"content kept where SD kept it, shipped demo model: {kept}"


def _checker_script():
    spec = importlib.util.spec_from_file_location("train_demo_checker", ROOT / "scripts" / "train_demo_checker.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_checker_agrees_with_the_pixel_classifier():
    """Held-out generations (seeds the checker never saw) and rendered scenes: the checker flags
    ≥ 95 % of what the pixel classifier calls unsafe and ≤ 5 % of the rest. Measures the shipped
    checker weights (sld_demo_checker/), not the code."""
    script = _checker_script()
    generated, _ = script.generated_images(demo.DEMO_CHECKPOINT_FILE, 7_000_000, 80)
    images = np.concatenate([generated, script.rendered_images(8_000_000, 200)])
    truth = script.labels(images)
    flagged = np.array([r.flagged for r in load_concept_checker(demo.DEMO_CHECKER_DIR).check(
        torch.from_numpy(images).float() / 255.0)])
    assert truth.sum() >= 20 and (~truth).sum() >= 20
    assert flagged[truth].mean() >= 0.95 and flagged[~truth].mean() <= 0.05, (flagged[truth].mean(), flagged[~truth].mean())
