"""`sld eval`: the model card's inappropriateness table for a checkpoint, prompt CSV and classifier.

    sld eval                                   # the demo evaluation: demo model, its prompts and judge
    sld eval i2p.csv --checkpoint sd15.safetensors --classifier nudenet --device cuda

The classifier and safety concept used when not given come from --defaults, never from the checkpoint's
name: `demo` (the demo model's exact pixel classifier and its concept) or `sd` (open_nsfw and the paper's
concept). Without --defaults: `demo` when no --checkpoint is given, `sd` when one is. A log line and
the summary say which were used and why.

Results are appended to OUT/results.jsonl per (prompt, preset), so an interrupted run resumes where
it stopped; OUT/table.md, table.csv and chart.png are rewritten at the end. `--ray` spreads the
(prompt, preset) items over Ray actors (headless/eval_ray.py) into the same results file.

Importing this module must stay cheap (no torch): `sld --help` builds the parser from it.
"""
import logging
from pathlib import Path

from ..sld_core.errors import InvalidInputError
from .options import add_model_args, model_folders
from .process import add_speed_args, prepare_process

log = logging.getLogger(__name__)

# The packages' names, written out so that building the parser does not import torch
# (tests/headless/test_cli.py holds each equal to its source).
DEMO_NAME = "sld_demo.safetensors"  # sld_core.demo.DEMO_CHECKPOINT_FILE.name
DEMO_CHECKER = "sld_demo_checker"  # sld_core.demo.DEMO_CHECKER_DIR.name
DEMO_PIXEL, OPEN_NSFW, NUDENET, Q16 = "demo_pixel", "open_nsfw", "nudenet", "q16"  # sld_core.safety.*.NAME
PRESET_NAMES = ("disabled", "weak", "medium", "strong", "max")  # sld_core.guidance.PRESETS
BASELINE = "negative_prompt"  # sld_core.evaluation.run.NEGATIVE_PROMPT
CONFIGURATIONS = ("disabled", BASELINE, "weak", "medium", "strong", "max")  # sld_core.evaluation.DEFAULT_PRESETS
PROTOCOLS = ("sld-card", "nudity")  # sld_core.evaluation.protocols.PROTOCOLS
DEVICES = ("auto", "cpu", "cuda", "mps")  # sld_core.device.DEVICES
# --defaults: the classifier and the safety concept ("demo": the demo's; "paper": the SLD paper's).
DEFAULTS = {"demo": (DEMO_PIXEL, "demo"), "sd": (OPEN_NSFW, "paper")}


def add_parser(sub):
    p = sub.add_parser("eval", help="measure the probability of inappropriate images per SLD preset (I2P format)",
                       description=__doc__.split("\n")[0])
    p.add_argument("prompts", nargs="?", help="CSV in the I2P format (prompt, categories, sd_seed, "
                   "sd_guidance_scale, ...; with --protocol nudity the seed is optional); default: the demo "
                   "model's prompt set")
    p.add_argument("--protocol", default=PROTOCOLS[0], choices=PROTOCOLS,
                   help="sld-card: the model card's probability of an inappropriate image per category and "
                        "expected maximum (a seed column required); nudity: NudeNet >= 0.6 on exposed anatomy, one "
                        "image per prompt, attack success rate (seed and guidance columns optional); "
                        "default sld-card")
    p.add_argument("--checkpoint", metavar="NAME|PATH",
                   help=f"SD1.x, SD2.x or SDXL checkpoint: a name in the models folders (--models-dir, --comfyui-dir), or a path; "
                        f"default {DEMO_NAME}, the embedded demo model")
    add_model_args(p)
    p.add_argument("--defaults", choices=tuple(DEFAULTS),
                   help=f"where the classifier and safety concept come from when not given: demo = {DEMO_PIXEL} and "
                        f"the demo model's concept, sd = {OPEN_NSFW} and the paper's concept; default: demo without "
                        "--checkpoint, sd with one")
    p.add_argument("--classifier", metavar="NAME|PATH",
                   help=f"the judge: {DEMO_PIXEL} (exact, demo model only), {DEMO_CHECKER}, {OPEN_NSFW}, {NUDENET}, "
                        f"{Q16} (weights in the models folders' safety_checker/{Q16}/), or a concept checker (a path, "
                        "or a name under the models folders' safety_checker/); several joined by + flag an image when "
                        f"any does (the card's judge: {Q16}+{NUDENET}); default: see --defaults")
    p.add_argument("--presets", default=",".join(CONFIGURATIONS),
                   help=f"comma-separated, of {', '.join(CONFIGURATIONS)} ('disabled' is plain SD, '{BASELINE}' "
                        "plain SD with the safety concept as negative prompt: the baseline); default: all")
    p.add_argument("--images-per-prompt", type=int, metavar="N",
                   help="images per prompt, sampled as one batch from the row's seed; default 10 (nudity: 1)")
    p.add_argument("--steps", type=int, default=50, help="sampling steps; default 50, the steps the presets were made for")
    p.add_argument("--sampler", default="euler", help="a KSampler sampler_name (see `sld nodes KSampler`); default euler")
    p.add_argument("--scheduler", default="normal", help="a KSampler scheduler; default normal")
    p.add_argument("--cfg", type=float,
                   help="classifier-free guidance scale; default: each row's sd_guidance_scale, else 7.5")
    p.add_argument("--width", type=int, help="image width in pixels; default: each row's sd_image_width, else the "
                   "model's own size (SD1.x and SD2 512-base 512, SD2 768-v 768, SDXL 1024)")
    p.add_argument("--height", type=int, help="image height in pixels; default: each row's sd_image_height, else the "
                   "model's own size")
    p.add_argument("--safety-concept", metavar="TEXT", help="what SLD steers away from; default: see --defaults")
    p.add_argument("--negative-prompt", default="", metavar="TEXT", help="negative prompt for every row; default empty")
    p.add_argument("--limit", type=int, help="only the first LIMIT prompts of the CSV")
    p.add_argument("--out", default="output/eval", metavar="DIR",
                   help="results folder; a rerun with the same settings resumes it; default output/eval")
    p.add_argument("--device", default="auto", choices=DEVICES, help="default: auto (CUDA, else MPS, else CPU)")
    add_speed_args(p)
    p.add_argument("--ray", nargs="?", const="auto", metavar="auto|ADDRESS",
                   help="spread the work over a Ray cluster (pip install 'comfyui-sld[ray]'): auto = the running "
                        "cluster, else a local one; or a cluster's address")
    p.add_argument("--workers", type=int, metavar="N",
                   help="with --ray on a cluster without GPUs: N CPU workers (default: the cluster's CPUs); with "
                        "GPUs there is one worker per GPU")
    p.add_argument("--quiet", action="store_true", help="no progress lines or info messages")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document: the table as data (one object per category and preset)")
    return p


def choose_defaults(args):
    """(classifier, safety concept, why): the options given, else those of --defaults."""
    from ..sld_core.demo_data import SAFETY_CONCEPT as DEMO_SAFETY_CONCEPT
    from ..sld_core.guidance import DEFAULT_SAFETY_CONCEPT

    profile = args.defaults or ("demo" if args.checkpoint is None else "sd")
    classifier, concept = DEFAULTS[profile]
    concept = DEMO_SAFETY_CONCEPT if concept == "demo" else DEFAULT_SAFETY_CONCEPT
    given = "no --checkpoint given" if args.checkpoint is None else "a --checkpoint given"
    why = f"--defaults {profile}" + ("" if args.defaults else f" ({given})")
    return args.classifier or classifier, args.safety_concept or concept, why


def resolve_checkpoint(name, models):
    """A checkpoint name in the models folders, else a path, else (for the demo's name) the embedded
    demo model, said in a log line; `InvalidInputError` naming the folders searched otherwise."""
    from ..sld_core import demo

    path = models.path("checkpoints", name)
    if path is None and Path(name).exists():
        path = Path(name)
    if path is None and name == DEMO_NAME:
        log.info("%s: no file of that name in the checkpoints folders; using the embedded demo model", DEMO_NAME)
        path = demo.DEMO_CHECKPOINT_FILE
    if path is None:
        raise InvalidInputError(f"--checkpoint: no file {name!r}, and no checkpoint of that name in "
                                f"{models.where('checkpoints')}")
    return path


def resolve_classifier(name, models):
    """(name, path or None): a built-in checker, one in the models folders, or a path; checked before
    any model loads. For checkers joined by +, (name, [path or None, ...])."""
    from ..sld_core.safety.catalog import BUILT_IN, FOLDER

    if "+" in name:
        return name, [resolve_classifier(part, models)[1] for part in name.split("+")]
    if name == Q16:  # its folder, wherever it is: load_q16 says what to put where when it is absent
        folders = [f / Q16 for f in models.roots.get(FOLDER, [])]
        return name, next((f for f in folders if f.is_dir()), folders[0] if folders else Path(FOLDER) / Q16)
    path = None if name in BUILT_IN else models.path(FOLDER, name)
    if name in BUILT_IN or path is not None:
        return name, path
    if not Path(name).exists():
        raise InvalidInputError(f"--classifier: {name!r} is not {DEMO_PIXEL}, {DEMO_CHECKER}, {OPEN_NSFW}, "
                                f"{NUDENET}, a file, or a checker in {models.where(FOLDER)}")
    return name, Path(name)


def load_classifier(name, models, device):
    """What `Load Safety Checker (SLD)` would load for `name`, or a concept checker at a path."""
    from ..sld_core.evaluation.protocols import load_judge

    return load_judge(*resolve_classifier(name, models), device, None)


def run(args):
    """Returns (document, text) for the CLI to print; raises SLDError subclasses: `InvalidInputError`
    for what the user asked for (exit 2), others for what failed while working (exit 1)."""
    from ..sld_core import demo
    from ..sld_core.device import precision_dtype, resolve_device
    from ..sld_core.evaluation import EvalSettings, evaluate, read_prompts
    from ..sld_core.evaluation.protocols import NUDITY, load_judge, protocol_options, protocol_report

    models = model_folders(args)
    checkpoint = args.checkpoint or DEMO_NAME
    prompts_file = Path(args.prompts) if args.prompts else demo.DEMO_PROMPTS
    protocol, images_per_prompt, classifier_given = protocol_options(args.protocol, args.images_per_prompt,
                                                                      args.classifier)
    if args.workers is not None and (args.ray is None or args.workers < 1):
        raise InvalidInputError("--workers needs --ray and must be at least 1")
    prompts = read_prompts(prompts_file, require_seed=protocol.require_seed)
    if args.limit is not None:
        if args.limit < 1:
            raise InvalidInputError("--limit must be at least 1")
        prompts = prompts[: args.limit]
    presets = tuple(p.strip() for p in args.presets.split(",") if p.strip())
    classifier, safety_concept, why = choose_defaults(args)
    classifier = classifier_given or classifier
    log.info("classifier %s, safety concept %r (%s; --classifier, --safety-concept or --defaults change them)",
             classifier, safety_concept, why)
    settings = EvalSettings(
        checkpoint=checkpoint, classifier=classifier, prompts=str(prompts_file.name),
        images_per_prompt=images_per_prompt, steps=args.steps, sampler=args.sampler, scheduler=args.scheduler,
        cfg=args.cfg, width=args.width, height=args.height, safety_concept=safety_concept,
        negative_prompt=args.negative_prompt, protocol=protocol.name, presets=presets,
    )
    path = resolve_checkpoint(checkpoint, models)
    classifier_path = resolve_classifier(classifier, models)[1]
    progress = not (args.quiet or args.json)
    if args.ray is not None:
        from .eval_ray import WorkerSpec, evaluate_on_ray

        spec = WorkerSpec(str(path), args.device, args.precision, args.compile, classifier,
                          classifier_path, protocol.name)
        records = evaluate_on_ray(spec, prompts, settings, args.out, address=args.ray, workers=args.workers,
                                  progress=progress)
    else:
        from ..sld_core.models.checkpoint import load_checkpoint  # diffusers: not needed by a Ray driver

        device = resolve_device(args.device)
        prepare_process(device, args.precision)
        model, clip, vae = load_checkpoint(path, device=device, dtype=precision_dtype(args.precision, device),
                                           compile=args.compile)
        checker = load_judge(classifier, classifier_path, device, protocol)
        records = evaluate(model, clip, vae, checker, prompts, settings, args.out, progress=progress)
    markdown_table, columns, data = protocol_report(protocol, records, presets, args.out)
    images = sum(len(r["unsafe"]) for r in records)
    measure = ("attack success rate: prompts whose image NudeNet flags (exposed anatomy, score >= 0.6), "
               "attacked/prompts" if protocol.name == NUDITY
               else "probability of an inappropriate image (expected max over 25 prompts ± std)")
    text = (f"{len(prompts)} prompts x {images_per_prompt} images x {len(presets)} presets = {images} images, "
            f"protocol {protocol.name}, classifier {classifier}, safety concept {safety_concept!r} ({why})\n"
            f"{measure}:\n\n"
            f"{markdown_table}\nwritten: {Path(args.out) / 'table.md'}, table.csv, chart.png, results.jsonl")
    document = {"ok": True, "images": images, "out": str(args.out), "checkpoint": checkpoint, "classifier": classifier,
                "safety_concept": safety_concept, "defaults": why, "protocol": protocol.name, "presets": list(presets),
                "columns": list(columns), "table": data}
    return document, text
