"""`sld eval` on Ray against one process: images per second on the demo evaluation with 1 and 2 CPU
workers (one torch thread each) and single-process (1 and 2 threads), one run each; and Ray's
per-item overhead when the work is tiny (1 step, 1 image of 64 px).

    OMP_NUM_THREADS=1 python bench/bench_eval_ray.py --out bench/results/ray-YYYY-MM-DD/bench_eval_ray.json

Each run loads the model (Ray: starts its workers) and then streams items. `images/s` is over the
whole run; `steady images/s` over the items after the first, the rate a long evaluation gets; start-up
is the time to the first record less one steady item.
Every run's result store must equal the single-process one (checked). Memory: the proportional set
size (PSS) of this process and every process under it (Ray's and the workers'), the peak sampled at
each record.
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from comfyui_sld.headless.eval_ray import WorkerSpec, evaluate_on_ray
from comfyui_sld.sld_core import demo
from comfyui_sld.sld_core.demo_data import SAFETY_CONCEPT
from comfyui_sld.sld_core.evaluation import EvalSettings, evaluate, read_prompts
from comfyui_sld.sld_core.safety.demo_pixel import load_demo_pixel


def tree_pss_mb(root=None):
    """PSS in MB of `root` (default: this process) and all its descendants, from /proc."""
    root = root or os.getpid()
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    tree, grew = {root}, True
    while grew:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def sorted_store(out):
    return sorted((out / "results.jsonl").read_text().splitlines())


class Stamps:
    """Times of the records as they arrive and the peak PSS of the process tree."""

    def __init__(self):
        self.start, self.times, self.peak_pss_mb = time.perf_counter(), [], 0.0

    def __call__(self, *record):
        self.times.append(time.perf_counter())
        self.peak_pss_mb = max(self.peak_pss_mb, tree_pss_mb())

    def summary(self):
        end, first = time.perf_counter(), self.times[0]
        load = os.getloadavg()[0]  # other work on the machine: the numbers are only as quiet as it was
        per_item = (self.times[-1] - first) / (len(self.times) - 1) if len(self.times) > 1 else None
        # start-up: until the first record, less that item's own steady time
        return dict(wall_s=end - self.start, startup_s=first - self.start - (per_item or 0), after_start_s=end - first,
                    steady_s_per_item=per_item, peak_pss_mb=self.peak_pss_mb, load_average_1min_at_end=load)


def single(prompts, settings, out, threads):
    torch.set_num_threads(threads)
    stamps = Stamps()
    model, clip, vae = demo.load_demo("cpu")
    evaluate(model, clip, vae, load_demo_pixel(), prompts, settings, out, progress=False, on_batch=stamps)
    return stamps.summary()


def on_ray(prompts, settings, out, workers):
    stamps = Stamps()
    evaluate_on_ray(WorkerSpec(str(demo.DEMO_CHECKPOINT_FILE), device="cpu"), prompts, settings, out,
                    workers=workers, progress=False, on_record=stamps)
    return stamps.summary()


def round_trip_ms(calls=200):
    """Ray's own cost per item: a worker's call that does nothing, one after another, in ms."""
    import ray

    actor = ray.remote(EvalWorkerStub).options(num_cpus=1).remote()
    ray.get(actor.ping.remote())
    start = time.perf_counter()
    for _ in range(calls):
        ray.get(actor.ping.remote())
    ms = 1e3 * (time.perf_counter() - start) / calls
    ray.kill(actor)
    return ms


class EvalWorkerStub:
    def ping(self):
        return None


def measure(prompts, settings, label, threads_single=(1, 2), workers=(1, 2)):
    images = len(prompts) * len(settings.presets) * settings.images_per_prompt
    runs, reference = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for threads in threads_single:
            out = Path(tmp) / f"single{threads}"
            runs[f"single-process {threads} thread(s)"] = single(prompts, settings, out, threads)
            reference = reference or sorted_store(out)
        for n in workers:
            out = Path(tmp) / f"ray{n}"
            runs[f"ray {n} CPU worker(s)"] = on_ray(prompts, settings, out, n)
            assert sorted_store(out) == reference, f"ray {n}: another result store than single-process"
    items = len(prompts) * len(settings.presets)
    for run in runs.values():
        run["images_per_s"] = images / run["wall_s"]
        run["images_per_s_steady"] = settings.images_per_prompt / run["steady_s_per_item"]
    print(f"\n{label}: {len(prompts)} prompts x {len(settings.presets)} configurations x "
          f"{settings.images_per_prompt} images = {images} images ({items} items), {settings.steps} steps")
    print(f"{'run':34} {'wall s':>8} {'start s':>8} {'images/s':>9} {'steady images/s':>16} {'peak PSS MB':>12} "
          f"{'load':>5}")
    for name, run in runs.items():
        print(f"{name:34} {run['wall_s']:8.2f} {run['startup_s']:8.2f} {run['images_per_s']:9.3f} "
              f"{run['images_per_s_steady']:16.3f} {run['peak_pss_mb']:12.0f} {run['load_average_1min_at_end']:5.1f}")
    return dict(label=label, prompts=len(prompts), configurations=list(settings.presets), items=items, images=images,
                steps=settings.steps, images_per_prompt=settings.images_per_prompt, runs=runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=2, help="demo prompts for the scaling run; default 2")
    parser.add_argument("--tiny-items", type=int, default=48, help="items of the overhead run; default 48")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level="warning", log_to_driver=False)
    all_prompts = read_prompts(demo.DEMO_PROMPTS)
    common = dict(checkpoint=demo.DEMO_CHECKPOINT_FILE.name, classifier="demo_pixel", prompts=demo.DEMO_PROMPTS.name,
                  safety_concept=SAFETY_CONCEPT)
    demo_eval = measure(all_prompts[: args.prompts], EvalSettings(**common), "demo eval (as `sld eval`)")
    tiny_presets = ("disabled", "negative_prompt")
    tiny_prompts = all_prompts[: args.tiny_items // len(tiny_presets)]
    tiny = measure(tiny_prompts, EvalSettings(**common, images_per_prompt=1, steps=1, presets=tiny_presets),
                   "tiny work (1 step, 1 image)", threads_single=(1,), workers=(1,))
    single_item = tiny["runs"]["single-process 1 thread(s)"]["steady_s_per_item"]
    ray_item = tiny["runs"]["ray 1 CPU worker(s)"]["steady_s_per_item"]
    overhead = dict(single_s_per_item=single_item, ray_s_per_item=ray_item, overhead_ms_per_item=1e3 * (ray_item - single_item),
                    empty_call_round_trip_ms=round_trip_ms())
    print(f"\nRay's per-item overhead: {overhead['overhead_ms_per_item']:.1f} ms "
          f"({1e3 * ray_item:.1f} ms an item on 1 worker vs {1e3 * single_item:.1f} ms in one process); "
          f"an empty call's round trip {overhead['empty_call_round_trip_ms']:.2f} ms")
    ray.shutdown()
    document = dict(machine=f"{os.cpu_count()} CPUs, torch {torch.__version__}, ray {ray.__version__}",
                    demo_eval=demo_eval, tiny=tiny, overhead=overhead)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
