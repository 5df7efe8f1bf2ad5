"""Model load time and peak memory: our loader against diffusers' `from_single_file`, and a whole
256×256 SLD run, each in a fresh process (peak RSS is per process).

The checkpoint is a seeded random-weight SD1.5 single file in float16 (2.1 GB, built once with
scripts/make_random_sd15.py). Both loaders produce float32 modules on the CPU; the reference size is
the checkpoint's float32 size (1.066 G parameters × 4 bytes). diffusers reads the component configs
from a local folder written from the configs sld_core ships (it is offline too). With a float32
diffusers folder of the same model (`--folder`, built by bench_one_shot.py), both sides also load that.
The libraries are imported before the clock starts: the seconds are the load alone.

    python bench/bench_load.py [--checkpoint sd15_fp16.safetensors] [--folder DIR] [--reps 3]
"""
import argparse
import json
import math
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness import emit

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "comfyui-sld"
DEFAULT_CHECKPOINT = CACHE / "sd15_random_seed0.safetensors"
DEFAULT_FOLDER = CACHE / "bench-sd15-diffusers-fp32"


def diffusers_config_folder(root):
    """A diffusers SD1.5 folder with configs and tokenizer only (what from_single_file needs offline)."""
    from importlib import resources

    models = resources.files("comfyui_sld.sld_core.models")
    for part in ("unet", "vae", "text_encoder"):
        (root / part).mkdir(parents=True, exist_ok=True)
        (root / part / "config.json").write_text(models.joinpath("configs", f"sd15_{part}.json").read_text())
    shutil.copytree(str(models.joinpath("clip_tokenizer")), root / "tokenizer", dirs_exist_ok=True)
    (root / "scheduler").mkdir(exist_ok=True)
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({
        "_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
        "num_train_timesteps": 1000, "skip_prk_steps": True, "set_alpha_to_one": False, "steps_offset": 1}))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None], "feature_extractor": [None, None], "requires_safety_checker": False}))
    return root


def worker(kind, checkpoint, folder):
    """One measurement in this process; prints a JSON line with seconds and peak RSS (GB). The model
    libraries are imported before the clock starts (`import_seconds`): `seconds` is the load itself."""
    import torch

    torch.set_num_threads(torch.get_num_threads())
    start = time.perf_counter()
    import diffusers.models.autoencoders.autoencoder_kl  # noqa: F401  what every kind needs, imported up front
    import diffusers.models.unets.unet_2d_condition  # noqa: F401
    import transformers.models.clip.modeling_clip  # noqa: F401
    from diffusers import StableDiffusionPipeline, StableDiffusionPipelineSafe

    from comfyui_sld.sld_core.acceleration import tune_cpu_allocator
    from comfyui_sld.sld_core.models.checkpoint import load_checkpoint

    imported = time.perf_counter()
    if kind == "diffusers-load":
        with tempfile.TemporaryDirectory() as config:
            StableDiffusionPipeline.from_single_file(
                str(checkpoint), config=str(diffusers_config_folder(Path(config))), local_files_only=True,
                torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False)
    elif kind == "diffusers-load-folder":
        StableDiffusionPipelineSafe.from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32,
                                                    safety_checker=None, requires_safety_checker=False)
    else:
        if kind == "ours-run":
            tune_cpu_allocator()  # as `sld run` does on the CPU
        model, clip, vae = load_checkpoint(folder if kind == "ours-load-folder" else checkpoint, device="cpu")
        if kind == "ours-run":
            from harness import run_ours
            from comfyui_sld.sld_core.guidance import PRESETS

            with torch.inference_mode():
                run_ours(model, clip, vae, PRESETS["max"], 256, 2)  # SLD at every step: UNet batch 3
    seconds = time.perf_counter() - imported
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB on Linux
    print(json.dumps({"kind": kind, "seconds": seconds, "import_seconds": imported - start, "peak_rss_gb": peak_gb}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER,
                        help="a float32 diffusers folder of the same model (bench_one_shot.py --case fp32-folder builds it)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.checkpoint, args.folder)
    if not args.checkpoint.is_file():
        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        print(f"building {args.checkpoint} (scripts/make_random_sd15.py)", flush=True)
        subprocess.run([sys.executable, str(HERE.parent / "scripts" / "make_random_sd15.py"), str(args.checkpoint)], check=True)
    from safetensors import safe_open

    with safe_open(str(args.checkpoint), framework="pt") as f:
        numel = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    fp32_gb = numel * 4 / 1e9
    file_gb = args.checkpoint.stat().st_size / 1e9
    print(f"checkpoint {args.checkpoint.name}: {file_gb:.2f} GB on disk, {numel / 1e9:.3f} G values, float32 size {fp32_gb:.2f} GB")

    kinds = ["ours-load", "diffusers-load", "ours-run"]
    if args.folder.is_dir():
        kinds += ["ours-load-folder", "diffusers-load-folder"]
    results = {kind: [] for kind in kinds}
    for rep in range(args.reps):
        for kind in results:
            out = subprocess.run([sys.executable, __file__, "--worker", kind, "--checkpoint", str(args.checkpoint),
                                  "--folder", str(args.folder)],
                                 cwd=HERE, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{kind} failed:\n{out.stderr[-3000:]}")
                continue
            results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"rep {rep} {kind}: {results[kind][-1]}", flush=True)

    print("\n| process | load seconds (median) | imports before it (s) | peak RSS GB (median) | peak RSS / float32 size |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for kind, rows in results.items():
        if not rows:
            continue
        seconds = statistics.median(r["seconds"] for r in rows)
        peak = statistics.median(r["peak_rss_gb"] for r in rows)
        imports = statistics.median(r["import_seconds"] for r in rows)
        print(f"| {kind} | {seconds:.2f} | {imports:.2f} | {peak:.2f} | {peak / fp32_gb:.2f} |")
        emit(dict(bench="load", kind=kind, seconds=seconds, peak_rss_gb=peak, fp32_gb=fp32_gb, file_gb=file_gb,
                  ratio_to_fp32=peak / fp32_gb, reps=len(rows)))
    if results["ours-load"] and results["diffusers-load"]:
        ratio = statistics.median(r["seconds"] for r in results["ours-load"]) / statistics.median(
            r["seconds"] for r in results["diffusers-load"])
        print(f"load time ours / diffusers from_single_file: {ratio:.2f}")


if __name__ == "__main__":
    main()
