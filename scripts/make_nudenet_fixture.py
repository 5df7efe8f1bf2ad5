"""Build tests/fixtures/nudenet_positive.png: an abstract pattern NudeNet's detector flags.

The NudeNet tests need an image the detector scores above the checker's threshold, and we ship no
photographs. This is a seeded black-box search over the detector's own behaviour: two shaded discs
with a darker dot each on a plain background (colours, sizes, spacing and shading are 13 numbers),
improved by a (1+λ) evolution strategy on the best raw score among the checker's default (exposed)
classes, until the checker itself flags the image with a margin. Bounded to a few CPU-minutes; run
once from the repository root with the `nudenet` extra installed:

    python scripts/make_nudenet_fixture.py [--seed 0] [--minutes 4]
"""
import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "nudenet_positive.png"
SIZE, POPULATION, PARAMETERS = 320, 8, 13
TARGET = 0.75  # the checker's default threshold is 0.6: keep a margin for other onnxruntime builds


def render(theta):
    """13 numbers in 0..1 → uint8 RGB [320,320,3]: background, disc and dot colours (9), disc radius,
    dot radius, disc spacing, shading."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)
    background, disc, dot = theta[0:3], theta[3:6], theta[6:9]
    radius, dot_radius = 30 + 60 * theta[9], 4 + 20 * theta[10]
    spacing, shading = 40 + 120 * theta[11], theta[12]
    image = np.broadcast_to(background, (SIZE, SIZE, 3)).copy()
    for cx in (SIZE / 2 - spacing, SIZE / 2 + spacing):
        distance = np.hypot(x - cx, y - SIZE / 2)
        light = 1 - shading * (distance / radius) ** 2
        image = np.where((distance < radius)[..., None], disc * light[..., None], image)
        image = np.where((np.hypot(x - cx, y - SIZE / 2 - radius / 6) < dot_radius)[..., None], dot, image)
    return (image.clip(0, 1) * 255).round().astype(np.uint8)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=4.0)
    args = parser.parse_args()

    import onnxruntime
    from nudenet import NudeDetector
    from nudenet.nudenet import _read_image

    from comfyui_sld.sld_core.safety.nudenet_detector import DEFAULT_CLASSES, LABELS, NudeNetChecker

    detector = NudeDetector()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1  # a shared machine
    session = onnxruntime.InferenceSession(detector.onnx_session._model_path, options, providers=["CPUExecutionProvider"])
    rows = [4 + LABELS.index(c) for c in DEFAULT_CLASSES]

    def fitness(grids):
        blobs = np.concatenate([_read_image(render(t)[:, :, ::-1].copy(), SIZE)[0] for t in grids])
        out = session.run(None, {session.get_inputs()[0].name: blobs})[0]  # [N, 4 + 18, anchors]
        return out[:, rows, :].max(axis=(1, 2))

    rng = np.random.default_rng(args.seed)
    best = rng.random(PARAMETERS)
    best_score = fitness([best])[0]
    checker = NudeNetChecker(detector)
    start, generation, sigma = time.monotonic(), 0, 0.1
    while time.monotonic() - start < args.minutes * 60:
        generation += 1
        children = [(best + sigma * rng.standard_normal(PARAMETERS)).clip(0, 1) for _ in range(POPULATION)]
        scores = fitness(children)
        if scores.max() > best_score:
            best, best_score = children[int(scores.argmax())], float(scores.max())
        if generation % 10 == 0:
            print(f"generation {generation}: best raw score {best_score:.3f} ({time.monotonic() - start:.0f} s)")
        if best_score >= TARGET:
            [result] = checker._check(render(best)[None], 0.0)
            if result.flagged and min(result.scores[c] for c in result.concepts) >= TARGET:
                break
    [result] = checker._check(render(best)[None], 0.0)
    print(f"after {generation} generations, {time.monotonic() - start:.0f} s: flagged={result.flagged} {result.scores}")
    if not result.flagged:
        raise SystemExit("no positive found within the time bound; try another --seed or more --minutes")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(render(best)).save(OUT, optimize=True)
    print(f"wrote {OUT} (parameters {np.round(best, 4).tolist()})")


if __name__ == "__main__":
    main()
