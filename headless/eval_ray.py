"""`sld eval --ray`: an evaluation's (prompt, preset) items spread over Ray actors, each holding the
model and the classifier once, every record appended by the driver to the same resumable results
file single-process `sld eval` writes, so both give the same store and table.

Why Ray actors (through `ray.util.ActorPool`) rather than Ray Data: the results file is appended one
record at a time by the driver as each item finishes (that is what lets a killed driver resume item by
item), and Ray's own actor restart with task retries already re-runs the item a killed worker held;
Ray Data would add a streaming executor and an object-store round trip for work that is one
(prompt, preset) per call.

One actor per GPU where the cluster has GPUs, else `workers` CPU actors of one torch thread each: their
images are bit-identical to single-process ones made on one thread too (`OMP_NUM_THREADS=1 sld eval`;
float32 CPU kernels split their sums by thread count, so 1 and 2 threads differ in the last bits). The
checkpoint and classifier paths must be readable at the same path on every node. This is the only
module that imports ray (the optional extra `comfyui-sld[ray]`).
"""
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..sld_core.errors import InvalidInputError, SLDError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker loads: checkpoint and classifier files (absolute paths) and how to run them."""

    checkpoint: str
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    classifier: str = "demo_pixel"
    classifier_path: str | list | None = None  # a list for checkers joined by +
    protocol: str = "sld-card"


class Carried(Exception):
    """An `SLDError` raised in a worker, in a form Ray can send back: ours take more arguments than
    their message, which Ray's pickling of exceptions cannot rebuild."""

    def __init__(self, kind, args, state):
        super().__init__(kind, args, state)

    def rebuilt(self):
        kind, args, state = self.args
        error = kind.__new__(kind)
        error.args = args
        error.__dict__.update(state)
        return error


class EvalWorker:
    """A Ray actor's state: the model, the classifier and the encoded texts, loaded once."""

    def __init__(self, spec, settings, threads):
        # What cannot load (a missing classifier's weights, say) is raised by each call, where the
        # driver sees it as our error; raised here, Ray would only report a dead actor.
        self.error = None
        try:
            self._load(spec, settings, threads)
        except SLDError as error:
            self.error = error

    def _load(self, spec, settings, threads):
        import torch

        from ..sld_core.device import precision_dtype, resolve_device
        from ..sld_core.evaluation.protocols import PROTOCOLS, load_judge
        from ..sld_core.evaluation.run import text_encoder
        from ..sld_core.models.checkpoint import load_checkpoint
        from .process import prepare_process

        device = resolve_device(spec.device)
        if device.type == "cpu":
            torch.set_num_threads(threads)
        prepare_process(device, spec.precision)
        self.checker = load_judge(spec.classifier, spec.classifier_path, device, PROTOCOLS[spec.protocol])
        self.model, clip, self.vae = load_checkpoint(Path(spec.checkpoint), device=device,
                                                     dtype=precision_dtype(spec.precision, device), compile=spec.compile)
        self.clip, self.encoded, self.settings = clip, text_encoder(clip), settings

    def pid(self):
        return os.getpid()

    def images(self, eval_prompt, preset):
        """One item's decoded images: the same `generate` single-process eval runs."""
        from ..sld_core.evaluation.run import generate

        if self.error is not None:
            raise Carried(type(self.error), self.error.args, vars(self.error))
        return generate(self.model, self.clip, self.vae, eval_prompt, self.settings, preset, self.encoded)

    def run(self, eval_prompt, preset):
        """The results record of one item, scored as single-process eval scores it."""
        from ..sld_core.evaluation.run import score

        images = self.images(eval_prompt, preset)
        return score(self.checker, eval_prompt, preset, images)


def _absolute(path):
    """Paths as the workers need them: absolute (their working folder is not ours)."""
    if isinstance(path, (list, tuple)):
        return [_absolute(p) for p in path]
    return None if path is None else str(Path(path).resolve())


def _import_ray():
    try:
        import ray
    except ImportError as error:
        raise InvalidInputError(f"--ray needs Ray: pip install 'comfyui-sld[ray]' ({error})") from None
    return ray


def connect(address="auto", **local_options):
    """Join the cluster at `address` ("auto": the running one, else a new local one); returns whether
    this call connected (and so should disconnect), False when Ray was already initialised."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address == "auto":  # ray.init() joins a running local cluster, else starts one
        ray.init(include_dashboard=False, **local_options)
    else:
        ray.init(address=address)
    return True


def start_workers(spec, settings, workers=None, limit=None):
    """The actors: one per GPU (`workers` caps them), else `workers` (default: the cluster's CPUs) CPU
    actors of one CPU and one torch thread; never more than `limit` (the items to do). Ray restarts a
    killed actor and retries the call it was running, so no item is lost."""
    ray = _import_ray()
    resources = ray.cluster_resources()
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 1))
    count = (min(workers or gpus, gpus) if gpus else workers or cpus)
    count = max(1, min(count, limit or count))
    actor = ray.remote(EvalWorker).options(num_cpus=1, num_gpus=1 if gpus else 0, max_restarts=-1,
                                           max_task_retries=-1)
    log.info("sld eval on Ray: %d %s worker(s)", count, "GPU" if gpus else "CPU")
    return [actor.remote(spec, settings, 1) for _ in range(count)]


def evaluate_on_ray(spec, prompts, settings, out_dir, address="auto", workers=None, progress=True, on_record=None,
                    on_start=None):
    """`sld_core.evaluation.evaluate` on Ray: the items `out_dir` lacks, run by Ray actors, each record
    appended as it arrives (once: an item already recorded is never appended again); returns all records.
    `on_start(actors)` and `on_record(record)` let a caller watch (tests kill a worker from them)."""
    from ..sld_core.evaluation.run import finished, plan
    from ..sld_core.progress import progress_bar

    ray = _import_ray()  # before anything is written: without Ray, nothing to resume
    results, todo = plan(prompts, settings, out_dir)
    if not todo:
        return finished(results, prompts, settings)
    spec = WorkerSpec(**{**spec.__dict__, "checkpoint": _absolute(spec.checkpoint),
                         "classifier_path": _absolute(spec.classifier_path)})
    connected = connect(address)
    actors = []
    try:
        actors = start_workers(spec, settings, workers, len(todo))
        if on_start is not None:
            on_start(actors)
        done = set(results.done())
        bar = progress_bar(total=len(todo), desc="sld eval (ray)", unit="batch", disable=not progress)
        pool = ray.util.ActorPool(actors)
        try:
            for record in pool.map_unordered(lambda a, item: a.run.remote(*item), todo):
                key = (record["prompt_index"], record["preset"])
                if key not in done:
                    done.add(key)
                    results.append(record)
                    bar.update(1)
                    if on_record is not None:
                        on_record(record)
        except ray.exceptions.RayTaskError as error:
            if isinstance(error.cause, Carried):  # ours, raised in a worker: said as if raised here
                raise error.cause.rebuilt() from None
            raise
        bar.close()
    finally:
        for a in actors:  # give their CPUs/GPUs back to the cluster now, not when the job ends
            ray.kill(a)
        if connected:
            ray.shutdown()
    return finished(results, prompts, settings)
