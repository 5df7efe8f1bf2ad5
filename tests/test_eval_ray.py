"""`sld eval --ray` on a local Ray cluster this module starts (2 CPUs, no GPU): on the demo model,
single-process eval, 1 worker and 2 workers give the same images, result store and table; a worker
process killed mid-run and a driver killed and restarted still give the complete, identical store with
no record twice. One cluster for the whole module keeps the CI time small."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import ray  # the `ray` extra; the test extra (and so CI) installs it
import torch

from comfyui_sld.headless.cli import main
from comfyui_sld.headless.eval_ray import WorkerSpec, evaluate_on_ray
from comfyui_sld.sld_core import demo
from comfyui_sld.sld_core.demo_data import SAFETY_CONCEPT
from comfyui_sld.sld_core.evaluation import EvalSettings, evaluate, read_prompts
from comfyui_sld.sld_core.evaluation.protocols import PROTOCOLS, protocol_report
from comfyui_sld.sld_core.evaluation.run import generate, text_encoder
from comfyui_sld.sld_core.safety.demo_pixel import load_demo_pixel

# What `sld eval --limit 4 --images-per-prompt 2 --steps 4 --presets ...` makes on the demo model, so
# that a store written by the command and one written here can be compared.
PRESETS = ("disabled", "negative_prompt", "max")
SETTINGS = EvalSettings(checkpoint=demo.DEMO_CHECKPOINT_FILE.name, classifier="demo_pixel",
                        prompts=demo.DEMO_PROMPTS.name, images_per_prompt=2, steps=4, safety_concept=SAFETY_CONCEPT,
                        presets=PRESETS)
CLI = ["eval", "--limit", "4", "--images-per-prompt", "2", "--steps", "4", "--presets", ",".join(PRESETS),
       "--quiet", "--ray"]
SPEC = WorkerSpec(str(demo.DEMO_CHECKPOINT_FILE), device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Single-process runs here on one torch thread, as each CPU worker does: float32 CPU kernels split
    their sums by thread count, so bits agree between equal thread counts (`OMP_NUM_THREADS=1 sld eval`
    equals any number of one-thread workers), not between 1 and 2 threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=80 * 2**20,
             logging_level="warning", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def prompts():
    return read_prompts(demo.DEMO_PROMPTS)[:4]


@pytest.fixture(scope="module")
def reference(prompts, tmp_path_factory):
    """The single-process store and table, in this process."""
    out = tmp_path_factory.mktemp("single")
    model, clip, vae = demo.load_demo("cpu")
    records = evaluate(model, clip, vae, load_demo_pixel(), prompts, SETTINGS, out, progress=False)
    return dict(out=out, records=records, runtime=(model, clip, vae))


def store(out):
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    keys = [(r["prompt_index"], r["preset"]) for r in records]
    assert len(keys) == len(set(keys)), "a (prompt, preset) recorded twice"
    return sorted(records, key=lambda r: (r["prompt_index"], r["preset"]))


def table_text(out, records):
    return protocol_report(PROTOCOLS["sld-card"], records, PRESETS, out)[0], (out / "table.csv").read_text()


def test_one_and_two_workers_give_the_single_process_images_store_and_table(cluster, prompts, reference, tmp_path):
    expected = store(reference["out"])
    assert len(expected) == len(prompts) * len(PRESETS)
    model, clip, vae = reference["runtime"]

    def same_images(actors):  # before the run: the worker's images are the bits this process makes
        for preset in ("negative_prompt", "max"):
            mine = generate(model, clip, vae, prompts[1], SETTINGS, preset, text_encoder(clip))
            assert torch.equal(ray.get(actors[0].images.remote(prompts[1], preset)), mine)
        started.append(len(actors))

    for workers in (1, 2):
        out, started = tmp_path / f"ray{workers}", []
        records = evaluate_on_ray(SPEC, prompts, SETTINGS, out, workers=workers, progress=False, on_start=same_images)
        assert started == [workers]
        assert store(out) == expected
        assert table_text(out, records) == table_text(reference["out"], reference["records"])


def test_a_worker_killed_mid_run_loses_and_repeats_nothing(cluster, prompts, reference, tmp_path):
    pids, killed = [], []

    def kill_first_worker(record):  # after the first record: the worker is busy with its next item
        if not killed:
            os.kill(pids[0], signal.SIGKILL)
            killed.append(record)

    out = tmp_path / "killed"
    evaluate_on_ray(SPEC, prompts, SETTINGS, out, workers=2, progress=False, on_record=kill_first_worker,
                    on_start=lambda actors: pids.extend(ray.get([a.pid.remote() for a in actors])))
    assert killed and len(pids) == 2
    assert store(out) == store(reference["out"])


def test_a_killed_driver_resumes(cluster, reference, tmp_path):
    out = tmp_path / "driver"
    command = [sys.executable, "-m", "comfyui_sld.headless.cli", *CLI, cluster, "--workers", "1", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    results, deadline = out / "results.jsonl", time.monotonic() + 120
    while not (results.exists() and results.read_text().count("\n") >= 2) and driver.poll() is None:
        assert time.monotonic() < deadline, (tmp_path / "driver.log").read_text()
        time.sleep(0.02)
    driver.kill()
    driver.wait()
    assert 2 <= len(store(out)) < len(store(reference["out"])), "the driver was not killed mid-run"
    assert main([*CLI, cluster, "--workers", "1", "--out", str(out)]) == 0  # restarted (here: same cluster)
    assert store(out) == store(reference["out"])
    assert (out / "table.csv").read_text() == table_text(reference["out"], reference["records"])[1]


def test_a_worker_that_cannot_load_its_classifier_fails_the_run_with_our_error(cluster, prompts, tmp_path):
    from comfyui_sld.sld_core.errors import SafetyCheckerError

    spec = WorkerSpec(SPEC.checkpoint, device="cpu", classifier="q16", classifier_path=str(tmp_path / "q16"))
    with pytest.raises(SafetyCheckerError, match="q16.*lacks clip-vit-large-patch14/"):
        evaluate_on_ray(spec, prompts[:1], SETTINGS, tmp_path / "out", workers=1, progress=False)
    assert (tmp_path / "out" / "results.jsonl").exists() is False or not (tmp_path / "out" / "results.jsonl").read_text()
