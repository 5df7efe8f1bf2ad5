"""Generate and judge the evaluation images: N per prompt and preset, appended to a results file as
each (prompt, preset) finishes, so that a rerun skips what is done.

Each prompt's N images are one batch sampled from the prompt's seed, ComfyUI-style (one noise
tensor for the batch), and every preset starts from that same noise: image j of a prompt is the
same draw under every preset, which is what makes per-image comparisons with SD fair.
"""
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..errors import InvalidInputError
from ..guidance import DEFAULT_SAFETY_CONCEPT, PRESETS, resolve_params
from ..progress import progress_bar

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
SETTINGS_FILE = "settings.json"
# The baseline SLD must beat: plain SD with the safety concept as its negative prompt (after the
# user's negative prompt, if any), no SLD. It sits beside the presets in the table.
NEGATIVE_PROMPT = "negative_prompt"
WITHOUT_SLD = ("disabled", NEGATIVE_PROMPT)
DEFAULT_PRESETS = ("disabled", NEGATIVE_PROMPT, "weak", "medium", "strong", "max")
DEFAULT_CFG = 7.5  # the I2P wrappers run at the pipeline default, whatever the row says
LATENT_CELL = 8  # pixels per latent cell (every supported family's VAE)


@dataclass(frozen=True)
class EvalSettings:
    """What a results folder was made with; a rerun must match (except for added presets)."""

    checkpoint: str
    classifier: str
    prompts: str
    images_per_prompt: int = 10
    steps: int = 50
    sampler: str = "euler"
    scheduler: str = "normal"
    cfg: float | None = None  # None: the row's sd_guidance_scale, else DEFAULT_CFG
    width: int | None = None  # None: the row's sd_image_width, else the model's `native_size`
    height: int | None = None
    safety_concept: str = DEFAULT_SAFETY_CONCEPT
    negative_prompt: str = ""
    protocol: str = "sld-card"  # sld_core.evaluation.protocols: how rows are read and the table is made
    presets: tuple = field(default=DEFAULT_PRESETS, compare=False)

    def __post_init__(self):
        for preset in self.presets:
            if preset not in PRESETS and preset != NEGATIVE_PROMPT:
                raise InvalidInputError(f"unknown preset {preset!r}; expected some of "
                                        f"{', '.join((*PRESETS, NEGATIVE_PROMPT))}")
        if self.images_per_prompt < 1 or self.steps < 1:
            raise InvalidInputError("images per prompt and steps must be at least 1")


class ResultsFile:
    """`results.jsonl` in an output folder, one JSON line per (prompt, preset), plus `settings.json`."""

    def __init__(self, folder, settings):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / RESULTS_FILE
        self._check_settings(settings)
        self.records = self._read()

    def _check_settings(self, settings):
        file = self.folder / SETTINGS_FILE
        mine = {k: v for k, v in asdict(settings).items() if k != "presets"}
        if file.exists() and self.path.exists():
            theirs = {k: v for k, v in json.loads(file.read_text()).items() if k != "presets"}
            theirs = {**{k: v for k, v in asdict(EvalSettings("", "", "")).items() if k not in theirs}, **theirs}
            changed = [f"{k}: {theirs.get(k)!r} → {v!r}" for k, v in mine.items() if theirs.get(k) != v]
            if changed:
                raise InvalidInputError(f"{self.folder} holds results made with other settings ({'; '.join(changed)}); "
                                        "use another --out folder or the same settings")
        _write_atomic(file, json.dumps(dict(mine, presets=list(settings.presets)), indent=1))

    def _read(self):
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # a line cut off by a crash: drop it, it is redone
            data = data[: data.rfind(b"\n") + 1]
            with open(self.path, "wb") as f:
                f.write(data)
        return [json.loads(line) for line in data.decode().splitlines() if line.strip()]

    def done(self):
        return {(r["prompt_index"], r["preset"]): r for r in self.records}

    def append(self, record):
        line = json.dumps(record) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        self.records.append(record)


def _write_atomic(path, text):
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def score(checker, eval_prompt, preset, images):
    """The results record of one (prompt, preset) from its decoded images: every way of running the
    evaluation (one process, Ray actors) and the tests score images through this."""
    unsafe, kept, scores = judge(checker, images, eval_prompt.prompt)
    return dict(prompt_index=eval_prompt.index, preset=preset, prompt=eval_prompt.prompt,
                categories=list(eval_prompt.categories), seed=eval_prompt.seed, unsafe=unsafe, kept=kept, scores=scores)


def judge(checker, images, prompt):
    """(unsafe flags, content-kept flags or None, scores) for one batch of decoded images."""
    results = checker.check(images)
    unsafe = [bool(r.flagged) for r in results]
    kept_fn = getattr(checker, "content_kept", None)
    kept = [bool(kept_fn(r, prompt)) for r in results] if kept_fn else None
    scores = [{k: round(float(v), 4) for k, v in r.scores.items()} for r in results]
    return unsafe, kept, scores


def native_size(model):
    """The side the model was trained at, where diffusers' pipelines default to: its UNet's sample_size
    in pixels (SD1.x and SD2 512-base 512, SD2 768-v 768, SDXL and its refiner 1024)."""
    return model.unet.config.sample_size * LATENT_CELL


@torch.no_grad()
def generate(model, clip, vae, eval_prompt, settings, preset, encoded):
    """The decoded IMAGE batch [N, H, W, 3] for one prompt under one preset."""
    from ..ksample import ksample

    cfg = settings.cfg if settings.cfg is not None else (eval_prompt.guidance or DEFAULT_CFG)
    width = settings.width or eval_prompt.width or native_size(model)
    height = settings.height or eval_prompt.height or native_size(model)
    if width % 8 or height % 8:
        raise InvalidInputError(f"prompt {eval_prompt.index + 1}: image size {width}x{height} is not a multiple of 8")
    latent = {"samples": torch.zeros(settings.images_per_prompt, model.in_channels, height // 8, width // 8)}
    params = None if preset in WITHOUT_SLD else resolve_params(preset)
    negative = settings.negative_prompt
    if preset == NEGATIVE_PROMPT:
        negative = ", ".join(t for t in (settings.negative_prompt, settings.safety_concept) if t)
    out = ksample(model, eval_prompt.seed, settings.steps, cfg, settings.sampler, settings.scheduler,
                  encoded(eval_prompt.prompt), encoded(negative), latent,
                  safety_concept=encoded(settings.safety_concept) if params else None, sld_params=params,
                  disable_pbar=True)
    return vae.decode(out["samples"])


def evaluate(model, clip, vae, checker, prompts, settings, out_dir, progress=True, on_batch=None):
    """Fill `out_dir`/results.jsonl for every (prompt, preset) not already there; returns all records.

    `on_batch(eval_prompt, preset, images)` sees each decoded batch (e.g. to save a few examples).
    """
    results, todo = plan(prompts, settings, out_dir)
    _run(todo, model, clip, vae, checker, settings, results, text_encoder(clip), progress, on_batch)
    return finished(results, prompts, settings)


def plan(prompts, settings, out_dir):
    """(the results file, the (prompt, preset) items it lacks, in order); refuses a folder whose
    records were made from other prompts or settings."""
    results = ResultsFile(out_dir, settings)
    done = results.done()
    by_index = {p.index: p for p in prompts}
    for (index, preset), record in done.items():
        if index in by_index and record["prompt"] != by_index[index].prompt:
            raise InvalidInputError(f"{out_dir}: results for prompt {index + 1} were made from another prompt "
                                    f"({record['prompt']!r}); use another --out folder")
    for preset in settings.presets:  # named here; the guider says it too, without the preset's name
        if preset not in WITHOUT_SLD and PRESETS[preset].warmup_steps >= settings.steps:
            log.warning("%s: its warm-up of %d steps covers all %d steps, so it equals SD here",
                        preset, PRESETS[preset].warmup_steps, settings.steps)
    return results, [(p, preset) for p in prompts for preset in settings.presets if (p.index, preset) not in done]


def finished(results, prompts, settings):
    """The records of `prompts` x `settings.presets` in the results file."""
    wanted = {(p.index, preset) for p in prompts for preset in settings.presets}
    return [r for r in results.records if (r["prompt_index"], r["preset"]) in wanted]


def text_encoder(clip):
    """`clip.encode` remembering recent texts: each distinct text is encoded once (the last 64 kept)."""
    cache = {}

    def encoded(text):
        if text not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[text] = clip.encode(text)
        return cache[text]
    return encoded


def _run(todo, model, clip, vae, checker, settings, results, encoded, progress, on_batch):
    flagged = sum(sum(r["unsafe"]) for r in results.records)  # running totals for the progress bar
    judged = sum(len(r["unsafe"]) for r in results.records)
    bar = progress_bar(todo, desc="sld eval", unit="batch", disable=not progress)
    for eval_prompt, preset in bar:
        images = generate(model, clip, vae, eval_prompt, settings, preset, encoded)
        record = score(checker, eval_prompt, preset, images)
        unsafe = record["unsafe"]
        results.append(record)
        if on_batch is not None:
            on_batch(eval_prompt, preset, images)
        flagged, judged = flagged + sum(unsafe), judged + len(unsafe)
        bar.set_postfix(unsafe=f"{flagged}/{judged}")
    bar.close()
