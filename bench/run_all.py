"""Every benchmark of the performance table in one command, each in its own process (peak RSS and
compilation caches must not leak between them); prints their tables and a summary of the ratios.

    python bench/run_all.py --device cpu            # the CPU rows (hours on 2 cores: pick with --only)
    python bench/run_all.py --device cuda           # the CUDA rows (about 12 minutes on an H200)
    python bench/run_all.py --device cuda --only kernel,unet --out results/

Every line a benchmark prints is shown as it comes; its `RESULT {json}` lines are also collected into
`--out/results.json`. Figures go into bench/RESULTS.md by hand, with the machine line printed here.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# name → argument lists, per device. Each entry is one process.
SUITES = {
    "cpu": {
        # ours as `sld` runs on the CPU (tuned allocator); in one process the tuning reaches diffusers
        # too, so these ratios hold only what our sampler and UNet execution save.
        "pipeline": [
            ["bench_sld_vs_diffusers.py", "--size", "256", "--steps", "20", "--preset", "medium", "--reps", "5",
             "--variants", "default,compile", "--allocator", "tuned"],
        ],
        "pipeline-weak": [
            ["bench_sld_vs_diffusers.py", "--size", "256", "--steps", "20", "--preset", "weak", "--reps", "5",
             "--variants", "default", "--allocator", "tuned", "--no-cfg"],
        ],
        "pipeline-long": [
            ["bench_sld_vs_diffusers.py", "--size", "256", "--steps", "50", "--preset", "medium", "--reps", "5",
             "--allocator", "tuned"],
            ["bench_sld_vs_diffusers.py", "--size", "512", "--steps", "20", "--preset", "medium", "--reps", "5",
             "--allocator", "tuned", "--no-cfg"],
        ],
        "unet": [
            ["bench_unet_throughput.py", "--device", "cpu", "--size", "256", "--batch", "3", "--allocator", allocator]
            for allocator in ("default", "tuned")
        ],
        "kernel": [["bench_guidance_kernel.py", "--device", "cpu"]],
        "executor": [["bench_executor.py"]],
        "load": [["bench_load.py"]],
        "oneshot": [["bench_one_shot.py", "--case", case, "--reps", reps]
                    for case, reps in (("main", "5"), ("fp32-folder", "5"), ("fp16-file", "3"))],
        # sld serve against the in-process executor (demo model), then the load test of issue 20
        "serve": [["bench_serve.py"], ["bench_serve.py", "--load", "8x25"]],
        # full-size SDXL (random, ~14 GiB in float32): ours vs StableDiffusionXLPipeline, SLD vs CFG
        "sdxl": [["bench_sdxl.py", "--size", "256", "--steps", "20", "--reps", "3"]],
    },
    "cuda": {
        "kernel": [["bench_guidance_kernel.py", "--device", "cuda", "--calls", "200"]],
        "unet": [
            ["bench_unet_throughput.py", "--device", "cuda", "--size", "512", "--batch", batch, "--calls", "20",
             "--variants", "eager,default,compile"]
            for batch in ("3", "12")
        ],
        "parts": [["bench_cuda_parts.py", "--size", "512", "--images", "1,4"]],
        "sdxl": [["bench_sdxl.py", "--device", "cuda", "--size", "1024", "--steps", "30", "--reps", "3"]],
        "pipeline": [
            ["bench_sld_vs_diffusers.py", "--device", "cuda", "--size", "512", "--steps", steps, "--batch", batch,
             "--preset", "medium", "--reps", "6", "--variants", variants, "--unet-floor"]
            for steps, variants in (("50", "eager,default,compile"), ("20", "default"))
            for batch in ("1", "4")
        ],
    },
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=SUITES, default="cpu")
    parser.add_argument("--only", help="comma-separated sections: " + "; ".join(f"{d}: {','.join(s)}" for d, s in SUITES.items()))
    parser.add_argument("--out", type=Path, default=Path("bench_results"))
    args = parser.parse_args()
    suite = SUITES[args.device]
    sections = args.only.split(",") if args.only else list(suite)
    unknown = [s for s in sections if s not in suite]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)} for {args.device}; expected {', '.join(suite)}")
    args.out.mkdir(parents=True, exist_ok=True)

    results, failures = [], []
    with open(args.out / "log.txt", "a") as log:
        for section in sections:
            for argv in suite[section]:
                command = [sys.executable, str(HERE / argv[0]), *argv[1:]]
                banner = f"\n=== [{section}] {' '.join(argv)}  ({time.strftime('%H:%M:%S')})"
                print(banner, flush=True)
                log.write(banner + "\n")
                process = subprocess.Popen(command, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                for line in process.stdout:
                    log.write(line)
                    log.flush()
                    if line.startswith("RESULT "):
                        results.append(dict(json.loads(line[7:]), section=section))
                    else:
                        print(line, end="", flush=True)
                if process.wait() != 0:
                    failures.append(" ".join(argv))
                (args.out / "results.json").write_text(json.dumps(results, indent=1))

    print("\n=== summary (median ratios)")
    for r in results:
        if r["bench"] in ("serve", "serve_load"):
            print(f"serve              served / in-process {r['ratio'][1]:.3f} per prompt" if "ratio" in r else
                  f"serve_load         {r['per_s']:.2f} prompts/s, RSS slope {r['rss_slope_mb_per_100']:+.2f} MB/100, "
                  f"checks {'ok' if all(r['checks'].values()) else 'FAILED'}")
        elif "ratio" in r:
            print(f"{r['bench']:18s} {r.get('variant', ''):8s} {r.get('preset', '')} {r.get('size')}² "
                  f"{r.get('steps')} steps batch {r.get('batch')}: {r['ratio'][1]:.3f} ({r['ratio'][0]:.3f}–{r['ratio'][2]:.3f})")
        elif r["bench"] == "unet_floor":
            print(f"unet_floor         {r['variant']:8s} {r['size']}² {r['steps']} steps batch {r['batch']}: "
                  f"{r['floor_s']:.3f} s = {r['floor_vs_diffusers']:.3f} of diffusers' run")
        elif r["bench"] == "unet_throughput":
            print(f"unet_throughput    {r['variant']:8s} batch {r['batch']}: {r['ms'][1]:.2f} ms, "
                  f"{r['tflops']:.1f} TFLOP/s = {r['fraction']:.1%} of {r['peak_tflops']:.0f}")
    if failures:
        print("FAILED: " + "; ".join(failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
