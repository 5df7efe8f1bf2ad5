"""Executor overhead: re-running a workflow with a new seed against the sampler and decode alone.

The headless executor validates the graph, reuses cached loader and text-encoder outputs, runs the
SLD KSampler, decodes and writes a PNG atomically. The same sampling and decode called directly
through sld_core is the floor; the difference is what the graph runner costs per run. Uses the
embedded demo model (64×64, 50 steps, Medium), whose steps take milliseconds, so the overhead is
seen at its largest relative size.

    python bench/bench_executor.py [--reps 7]
"""
import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from harness import emit, machine_line
from comfyui_sld.headless.run import Executor
from comfyui_sld.nodes.context import Runtime
from comfyui_sld.nodes.folders import ModelFolders
from comfyui_sld.sld_core.demo import load_demo
from comfyui_sld.sld_core.guidance import resolve_params
from comfyui_sld.sld_core.ksample import ksample

WORKFLOW = Path(__file__).resolve().parent.parent / "workflows" / "api" / "sld_txt2img.json"


def sampler_alone(model, clip, vae, inputs, texts, seed):
    positive, negative, concept = (clip.encode(t) for t in texts)
    params = resolve_params(inputs["sld_preset"])
    latent = {"samples": torch.zeros(1, 4, 8, 8)}
    with torch.inference_mode():
        out = ksample(model, seed, inputs["steps"], inputs["cfg"], inputs["sampler_name"], inputs["scheduler"],
                      positive, negative, latent, safety_concept=concept, sld_params=params, disable_pbar=True)
        return vae.decode(out["samples"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    args = parser.parse_args()
    prompt = json.loads(WORKFLOW.read_text())
    sampler = next(n for n in prompt.values() if n["class_type"] == "SLDKSampler")["inputs"]
    texts = [prompt[sampler[k][0]]["inputs"]["text"] for k in ("positive", "negative", "safety_concept")]

    with tempfile.TemporaryDirectory() as out:
        runtime = Runtime(models=ModelFolders(Path(out) / "models"), output_dir=Path(out), device="cpu")
        executor = Executor(runtime, progress=False)
        start = time.perf_counter()
        executor.run(prompt)
        first = time.perf_counter() - start
        model, clip, vae = load_demo("cpu")
        sampler_alone(model, clip, vae, sampler, texts, 0)  # warm-up

        rerun, alone = [], []
        for rep in range(args.reps):
            seed = 1000 + rep
            next(n for n in prompt.values() if n["class_type"] == "SLDKSampler")["inputs"]["seed"] = seed
            start = time.perf_counter()
            result = executor.run(prompt)
            rerun.append(time.perf_counter() - start)
            start = time.perf_counter()
            sampler_alone(model, clip, vae, sampler, texts, seed)
            alone.append(time.perf_counter() - start)
        cached = sorted(result.cached)

    ratios = [r / a for r, a in zip(rerun, alone)]
    overhead_ms = [(r - a) * 1e3 for r, a in zip(rerun, alone)]
    print(machine_line("cpu"))
    print(f"first run (loads the model) {first:.2f} s; re-runs reuse nodes {cached}")
    print(f"re-run with a new seed {statistics.median(rerun) * 1e3:.0f} ms vs sampler + decode alone "
          f"{statistics.median(alone) * 1e3:.0f} ms: ratio {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}–{max(ratios):.3f}), overhead {statistics.median(overhead_ms):.0f} ms per run")
    emit(dict(bench="executor", first_s=first, rerun_ms=statistics.median(rerun) * 1e3,
              alone_ms=statistics.median(alone) * 1e3, ratio=(min(ratios), statistics.median(ratios), max(ratios)),
              overhead_ms=statistics.median(overhead_ms)))


if __name__ == "__main__":
    main()
