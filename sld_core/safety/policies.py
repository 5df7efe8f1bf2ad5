"""What happens to flagged images, and the JSON report and one-line summary of a checked batch.

`black_out` replaces a flagged image by zeros (what diffusers' checker does); `blur` pixelates it to
at most 8 pixels on its long side and smooths that back up (nothing recognisable survives);
`flag_only` passes every image on unchanged and only reports. The input batch is never modified.
"""
from ..errors import InvalidInputError

ACTIONS = ("black_out", "blur", "flag_only")
ACTION_DONE = {"black_out": "blacked out", "blur": "blurred", "flag_only": "passed on unchanged (flag only)"}
BLUR_CELLS = 8  # long-side resolution a blurred image is reduced to


def apply_action(images, flags, action):
    """A new IMAGE batch with `action` applied to the images whose flag is True."""
    if action not in ACTIONS:
        raise InvalidInputError(f"action: unknown action {action!r}; expected one of {', '.join(ACTIONS)}")
    if len(flags) != images.shape[0]:
        raise InvalidInputError(f"action: {len(flags)} flags for a batch of {images.shape[0]}")
    out = images.clone()
    if action == "flag_only":
        return out
    for index, flagged in enumerate(flags):
        if flagged:
            out[index] = 0.0 if action == "black_out" else blurred(images[index])
    return out


def blurred(image):
    """One `[H,W,3]` image reduced to ≤ BLUR_CELLS pixels on its long side (area mean), then
    upsampled bilinearly: colour blobs only."""
    import torch.nn.functional as F

    height, width = image.shape[:2]
    scale = BLUR_CELLS / max(height, width)
    small = (max(1, round(height * scale)), max(1, round(width * scale)))
    chw = image.movedim(-1, 0)[None].float()
    cells = F.adaptive_avg_pool2d(chw, small)
    return F.interpolate(cells, size=(height, width), mode="bilinear", align_corners=False)[0].movedim(0, -1)


def report(results, checker_name, action):
    """The node's report: a list with one entry per image (always the batch length)."""
    return [
        {
            "index": index,
            "checker": checker_name,
            "flagged": bool(result.flagged),
            "action": action if result.flagged and action != "flag_only" else "none",
            "scores": {k: float(v) for k, v in result.scores.items()},
            "concepts": list(result.concepts),
            **result.details,
        }
        for index, result in enumerate(results)
    ]


def summary(flags, action):
    """'2/4 images flagged: blacked out'."""
    count = sum(bool(f) for f in flags)
    text = f"{count}/{len(flags)} images flagged"
    return f"{text}: {ACTION_DONE[action]}" if count else text
