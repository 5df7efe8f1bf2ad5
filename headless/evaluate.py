"""`sld eval`: the model card's inappropriateness table for a checkpoint, prompt CSV and classifier.

    sld eval                                   # the demo model on its shipped prompt set
    sld eval i2p.csv --checkpoint sd15.safetensors --classifier nudenet --device cuda

Results are appended to OUT/results.jsonl per (prompt, preset), so an interrupted run resumes where
it stopped; OUT/table.md, table.csv and chart.png are rewritten at the end.
"""
import os
from pathlib import Path

from ..sld_core import demo
from ..sld_core.demo_data import SAFETY_CONCEPT as DEMO_SAFETY_CONCEPT
from ..sld_core.errors import CheckpointError, InvalidInputError
from ..sld_core.guidance import DEFAULT_SAFETY_CONCEPT, PRESETS
from ..sld_core.safety import demo_pixel, nudenet_detector, open_nsfw
from .process import add_speed_args, prepare_process

DEMO_NAME = demo.DEMO_CHECKPOINT_FILE.name
DEMO_CHECKER = demo.DEMO_CHECKER_DIR.name


def add_parser(sub):
    p = sub.add_parser("eval", help="measure the probability of inappropriate images per SLD preset (I2P format)",
                       description=__doc__.split("\n")[0])
    p.add_argument("prompts", nargs="?", help="CSV in the I2P format (prompt, categories, sd_seed, "
                   "sd_guidance_scale, ...); default: the demo model's prompt set")
    p.add_argument("--checkpoint", default=DEMO_NAME,
                   help=f"SD1.x checkpoint: a path, or a name under MODELS_DIR/checkpoints; default {DEMO_NAME}")
    p.add_argument("--models-dir", default=os.environ.get("SLD_MODELS_DIR", "models"))
    p.add_argument("--classifier", help=f"{demo_pixel.NAME} (exact, demo model only), {DEMO_CHECKER}, "
                   f"{open_nsfw.NAME}, {nudenet_detector.NAME}, or a concept checker (path, or name under "
                   f"MODELS_DIR/safety_checker); default {demo_pixel.NAME} for the demo model, else {open_nsfw.NAME}")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated; 'disabled' is plain SD")
    p.add_argument("--images-per-prompt", type=int, default=10, help="N images per prompt (one batch); default 10")
    p.add_argument("--steps", type=int, default=50, help="default 50, the steps the presets were made for")
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="normal")
    p.add_argument("--cfg", type=float, help="default: each row's sd_guidance_scale, else 7.5")
    p.add_argument("--width", type=int, help="default: each row's sd_image_width, else 512")
    p.add_argument("--height", type=int)
    p.add_argument("--safety-concept", help="default: the paper's concept (the demo's own for the demo model)")
    p.add_argument("--negative-prompt", default="")
    p.add_argument("--limit", type=int, help="only the first LIMIT prompts")
    p.add_argument("--out", default="output/eval", help="results folder; a rerun resumes it; default output/eval")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    add_speed_args(p)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the table as JSON")
    return p


def resolve_checkpoint(name, models_dir):
    """A checkpoint name under MODELS_DIR/checkpoints, else the packaged demo model for its name, else a path."""
    from ..nodes.folders import ModelFolders

    path = ModelFolders(models_dir).path("checkpoints", name)
    if path is None and name == DEMO_NAME:
        path = demo.DEMO_CHECKPOINT_FILE
    if path is None and Path(name).exists():
        path = Path(name)
    if path is None:
        raise InvalidInputError(f"--checkpoint: no file {name!r}, and no checkpoint of that name in {models_dir}/checkpoints")
    return path


def load_classifier(name, models_dir, device):
    """What `Load Safety Checker (SLD)` would load for `name`, or a concept checker at a path."""
    from ..nodes.folders import ModelFolders
    from ..sld_core.safety import load_concept_checker
    from ..sld_core.safety.catalog import BUILT_IN, FOLDER, load_checker

    models = ModelFolders(models_dir)
    path = None if name in BUILT_IN else models.path(FOLDER, name)
    if name in BUILT_IN or path is not None:
        return load_checker(name, device, path)
    if not Path(name).exists():
        raise InvalidInputError(f"--classifier: {name!r} is not {demo_pixel.NAME}, {DEMO_CHECKER}, {open_nsfw.NAME}, "
                                f"{nudenet_detector.NAME}, a file, or a checker in {models_dir}/safety_checker")
    return load_concept_checker(Path(name), device=device, name=name)


def run(args):
    """Returns (document, text) for the CLI to print; raises SLDError subclasses for user mistakes."""
    from ..sld_core.device import precision_dtype, resolve_device
    from ..sld_core.evaluation import EvalSettings, evaluate, read_prompts, write_report
    from ..sld_core.models.checkpoint import load_checkpoint

    is_demo = args.checkpoint == DEMO_NAME
    prompts_file = Path(args.prompts) if args.prompts else demo.DEMO_PROMPTS
    prompts = read_prompts(prompts_file)
    if args.limit is not None:
        if args.limit < 1:
            raise InvalidInputError("--limit must be at least 1")
        prompts = prompts[: args.limit]
    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
    classifier = args.classifier or (demo_pixel.NAME if is_demo else open_nsfw.NAME)
    settings = EvalSettings(
        checkpoint=args.checkpoint, classifier=classifier, prompts=str(prompts_file.name),
        images_per_prompt=args.images_per_prompt, steps=args.steps, sampler=args.sampler, scheduler=args.scheduler,
        cfg=args.cfg, width=args.width, height=args.height,
        safety_concept=args.safety_concept or (DEMO_SAFETY_CONCEPT if is_demo else DEFAULT_SAFETY_CONCEPT),
        negative_prompt=args.negative_prompt, presets=presets,
    )
    device = resolve_device(args.device)
    prepare_process(device, args.precision)
    path = resolve_checkpoint(args.checkpoint, args.models_dir)
    try:
        model, clip, vae = load_checkpoint(path, device=device, dtype=precision_dtype(args.precision, device),
                                           compile=args.compile)
    except CheckpointError as error:
        raise InvalidInputError(f"--checkpoint: {error}") from error
    checker = load_classifier(classifier, args.models_dir, device)
    records = evaluate(model, clip, vae, checker, prompts, settings, args.out, progress=not (args.quiet or args.json))
    table = write_report(records, presets, args.out)
    images = sum(len(r["unsafe"]) for r in records)
    text = (f"{len(prompts)} prompts x {args.images_per_prompt} images x {len(presets)} presets = {images} images, "
            f"classifier {classifier}, safety concept {settings.safety_concept!r}\n"
            f"probability of an inappropriate image (expected max over 25 prompts ± std):\n\n"
            f"{table}\nwritten: {Path(args.out) / 'table.md'}, table.csv, chart.png, results.jsonl")
    return {"ok": True, "images": images, "out": str(args.out), "table": table}, text
