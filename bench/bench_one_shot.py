"""One-shot runs, whole process: `sld run workflow.json` against diffusers' safe pipeline doing the same
job in a process of its own (`diffusers_one_shot.py`), as a user waits for them: start-up, imports,
loading, encoding, sampling, decoding and saving a PNG all count.

Each side is a fresh process every time; the sides alternate within a repetition (A B, then B A), one
unmeasured run of each comes first so the page cache holds the files and Python's bytecode caches are
built. Reported per case: seconds and peak RSS per side (median, min–max), the ratio ours / diffusers
within each repetition (median, min–max), and how far apart the two PNGs are.

Cases (256² / 20 steps / euler-normal / cfg 7.5 / Medium for the full-size ones, as the one-shot issue):
  main         the README's main job, `workflows/api/sld_txt2img.json` on the demo model; diffusers runs the
               same demo model exported as a diffusers folder (float32)
  fp32-folder  seeded random full-size SD1.5 as a float32 diffusers folder, both sides loading the folder
  fp16-file    the same weights as a float16 single file (the file ComfyUI users have): ours loads it,
               diffusers loads it with `from_single_file`, and, as a third side, its own float16 folder

    python bench/bench_one_shot.py --case fp32-folder [--reps 3] [--log results/x.jsonl]

The full-size models are built once from `~/.cache/comfyui-sld/sd15_random_seed0.safetensors`
(scripts/make_random_sd15.py writes it) into `--cache`.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness import fmt_spread

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = Path.home() / ".cache" / "comfyui-sld"
FP16_FILE = CACHE / "sd15_random_seed0.safetensors"
PROMPT, NEGATIVE, SEED = "a photograph of an astronaut riding a horse", "blurry", 42
MEDIUM = (1000.0, 10, 0.01, 0.3, 0.4)


def sld_command():
    script = Path(sys.executable).with_name("sld")
    return [str(script)] if script.exists() else [sys.executable, "-m", "comfyui_sld.headless.cli"]


def busy_cpu_seconds():
    """CPU seconds this machine has spent busy since boot (all processes), from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed_process(command, cwd):
    """One fresh process: wall seconds, peak RSS (GB), its CPU seconds, and the CPU seconds every other
    process used meanwhile (a disturbed run shows there); fails loudly if the process fails."""
    with tempfile.TemporaryFile() as errors:
        busy = busy_cpu_seconds()
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        cpu = usage.ru_utime + usage.ru_stime
        others = busy_cpu_seconds() - busy - cpu
        if os.waitstatus_to_exitcode(status):
            errors.seek(0)
            raise RuntimeError(f"{command[:3]} failed ({os.waitstatus_to_exitcode(status)}):\n{errors.read().decode()[-3000:]}")
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9, "cpu_seconds": cpu,
            "other_cpu_seconds": max(0.0, others), "minor_faults": usage.ru_minflt, "major_faults": usage.ru_majflt}


# --- the models ----------------------------------------------------------------------------------------

def export_diffusers_folder(checkpoint, folder, dtype):
    """`checkpoint` (anything our loader reads) written as a diffusers folder in `dtype`, with our
    tokenizer and an Euler (linspace) scheduler; what `from_pretrained` reads offline."""
    import torch

    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    if (folder / "model_index.json").is_file():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model, clip, vae = load_checkpoint(checkpoint, device="cpu", dtype=torch.float32)
    for name, module in (("unet", model.unet), ("vae", vae.autoencoder), ("text_encoder", clip.text_encoder)):
        module.to(getattr(torch, dtype)).save_pretrained(partial / name, safe_serialization=True)
    clip.tokenizer.save_pretrained(partial / "tokenizer")
    (partial / "scheduler").mkdir()
    (partial / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "EulerDiscreteScheduler", "beta_start": 0.00085, "beta_end": 0.012,
        "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "steps_offset": 1,
        "timestep_spacing": "linspace", "prediction_type": "epsilon"}))
    (partial / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipelineSafe", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "image_encoder": [None, None],
        "requires_safety_checker": False}))
    partial.rename(folder)
    return folder


def api_workflow(ckpt_name, size, steps, cfg, prompt, negative, concept=None, sld=MEDIUM):
    """The job as an API workflow: loader, three encodes, SLD sampler, decode, save."""
    if concept is None:
        from comfyui_sld.sld_core.sld_params import DEFAULT_SAFETY_CONCEPT as concept  # diffusers' default too
    concept_inputs = {"text": concept, "clip": ["1", 1]}
    scale, warmup, threshold, momentum, beta = sld
    return {
        "1": {"class_type": "SLDCheckpointLoader", "inputs": {"ckpt_name": ckpt_name}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": prompt, "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": negative, "clip": ["1", 1]}},
        "4": {"class_type": "SLDSafetyConcept", "inputs": concept_inputs},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": size, "height": size, "batch_size": 1}},
        "6": {"class_type": "SLDKSampler", "inputs": {
            "seed": SEED, "steps": steps, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
            "sld_preset": "custom", "sld_guidance_scale": scale, "sld_warmup_steps": warmup, "sld_threshold": threshold,
            "sld_momentum_scale": momentum, "sld_momentum_beta": beta, "model": ["1", 0], "positive": ["2", 0],
            "negative": ["3", 0], "latent_image": ["5", 0], "safety_concept": ["4", 0]}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["6", 0], "vae": ["1", 2]}},
        "8": {"class_type": "SaveImage", "inputs": {"filename_prefix": "oneshot", "images": ["7", 0]}},
    }


# --- the cases -----------------------------------------------------------------------------------------

def case_sides(case, work, before=None):
    """{side name: (command, PNG it writes)} for a case; the first side is ours."""
    models = work / "models"
    (models / "checkpoints").mkdir(parents=True, exist_ok=True)
    diffusers = [sys.executable, str(HERE / "diffusers_one_shot.py")]
    if case == "main":
        from comfyui_sld.sld_core import demo

        workflow = json.loads((ROOT / "workflows" / "api" / "sld_txt2img.json").read_text())
        inputs = {**workflow["6"]["inputs"], **workflow["5"]["inputs"]}
        job = dict(size=inputs["width"], steps=inputs["steps"], cfg=inputs["cfg"], seed=inputs["seed"],
                   prompt=workflow["2"]["inputs"]["text"], negative=workflow["3"]["inputs"]["text"],
                   concept=workflow["4"]["inputs"]["text"],
                   sld=[inputs[k] for k in ("sld_guidance_scale", "sld_warmup_steps", "sld_threshold",
                                            "sld_momentum_scale", "sld_momentum_beta")])
        assert job["seed"] == SEED and inputs["sld_preset"] == "medium"
        folder = export_diffusers_folder(demo.DEMO_CHECKPOINT_FILE, CACHE / "bench-demo-diffusers-fp32", "float32")
        workflow_file = ROOT / "workflows" / "api" / "sld_txt2img.json"
        theirs = diffusers + ["--folder", str(folder)]
    else:
        if not FP16_FILE.is_file():
            raise SystemExit(f"{FP16_FILE} is missing: python scripts/make_random_sd15.py {FP16_FILE}")
        job = dict(size=256, steps=20, cfg=7.5, seed=SEED, prompt=PROMPT, negative=NEGATIVE, concept=None, sld=MEDIUM)
        if case == "fp32-folder":
            folder = export_diffusers_folder(FP16_FILE, CACHE / "bench-sd15-diffusers-fp32", "float32")
            (models / "checkpoints" / "sd15").symlink_to(folder)
            ckpt, theirs = "sd15", diffusers + ["--folder", str(folder)]
        else:
            (models / "checkpoints" / "sd15.safetensors").symlink_to(FP16_FILE)
            ckpt = "sd15.safetensors"
            config = export_diffusers_folder(FP16_FILE, CACHE / "bench-sd15-diffusers-fp16", "float16")
            theirs = diffusers + ["--single-file", str(FP16_FILE), "--config", str(config)]
        workflow_file = work / "workflow.json"
        workflow_file.write_text(json.dumps(api_workflow(ckpt, job["size"], job["steps"], job["cfg"], job["prompt"],
                                                         job["negative"], job["concept"], job["sld"])))
    run_args = ["run", str(workflow_file), "--quiet", "--models-dir", str(models), "--device", "cpu"]
    ours = sld_command() + run_args + ["--output-dir", str(work / "out-ours")]
    common = ["--prompt", job["prompt"], "--negative", job["negative"], "--size", str(job["size"]),
              "--steps", str(job["steps"]), "--cfg", str(job["cfg"]), "--seed", str(SEED),
              "--sld", *map(str, job["sld"])]
    if job["concept"] is not None:
        common += ["--concept", job["concept"]]
    sides = {"sld run": (ours, work / "out-ours")}
    if before:  # the same command, with `comfyui_sld` imported from an earlier checkout
        sides["sld run (before)"] = (["env", f"PYTHONPATH={before}", sys.executable, "-m", "comfyui_sld.headless.cli"]
                                     + run_args + ["--output-dir", str(work / "out-before")], work / "out-before")
    sides["diffusers"] = (theirs + common + ["--out", str(work / "diffusers.png")], work / "diffusers.png")
    if case == "fp16-file":
        folder16 = CACHE / "bench-sd15-diffusers-fp16"
        sides["diffusers fp16 folder"] = (diffusers + ["--folder", str(folder16)] + common
                                          + ["--out", str(work / "diffusers16.png")], work / "diffusers16.png")
    return sides


def newest_png(path):
    if path.suffix == ".png":
        return path
    return max(path.glob("*.png"), key=lambda p: p.stat().st_mtime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("main", "fp32-folder", "fp16-file"), required=True)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--log", help="append one JSON line per measured process here")
    parser.add_argument("--before", help="a folder holding an earlier checkout as comfyui_sld/ (git worktree add "
                                         "DIR/comfyui_sld REV): its `sld run` becomes one more side")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sld-oneshot-") as tmp:
        work = Path(tmp)
        sides = case_sides(args.case, work, args.before)
        names = list(sides)
        for name in names:  # warm-up: page cache, bytecode caches
            timed_process(sides[name][0], work)
        runs = {name: [] for name in names}
        for rep in range(args.reps):
            order = names if rep % 2 == 0 else names[::-1]
            for name in order:
                measured = timed_process(sides[name][0], work)
                runs[name].append((measured["seconds"], measured["peak_rss_gb"]))
                record = {"case": args.case, "rep": rep, "side": name, **measured}
                print(json.dumps(record), flush=True)
                if args.log:
                    with open(args.log, "a") as log:
                        log.write(json.dumps(record) + "\n")
        ours_png = np.asarray(Image.open(newest_png(sides[names[0]][1])).convert("RGB"), dtype=np.int16)
        print(f"\ncase {args.case}, {args.reps} repetitions, each side a fresh process")
        for name in names:
            seconds = [s for s, _ in runs[name]]
            peaks = [p for _, p in runs[name]]
            line = f"  {name:24s} {fmt_spread(seconds, 2)} s   peak RSS {fmt_spread(peaks, 2)} GB"
            if name != names[0]:
                ratios = [o / t for (o, _), (t, _) in zip(runs[names[0]], runs[name])]
                theirs = np.asarray(Image.open(newest_png(sides[name][1])).convert("RGB"), dtype=np.int16)
                diff = np.abs(ours_png - theirs)
                line += f"   ours / this {fmt_spread(ratios, 3)}   image |Δ| mean {diff.mean():.2f}/255 max {diff.max()}/255"
            print(line)


if __name__ == "__main__":
    main()
