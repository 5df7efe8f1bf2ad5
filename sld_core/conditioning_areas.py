"""ComfyUI's multi-entry conditioning inside the sampler: areas, strengths and timestep ranges.

A CONDITIONING is a list of entries ``[embedding, {extras}]``. Per model evaluation at σ, ComfyUI
(``comfy/samplers.py``: ``process_conds``, ``get_area_and_mult``, ``calc_cond_batch``) predicts x̂₀
for every entry that applies and averages them per input (positive, negative, ...), pixel by pixel,
weighted by each entry's ``mult``:

    x̂₀(p) = Σₑ multₑ(p)·x̂₀ₑ(p) / (10⁻³⁷ + Σₑ multₑ(p))

* an entry applies at σ when σ_end ≤ σ ≤ σ_start, with σ_start/σ_end = ``percent_to_sigma`` of its
  ``start_percent``/``end_percent`` (no range: always);
* an ``area`` (h, w, y, x) in latent cells — or ``("percentage", h, w, y, x)``, resolved against the
  latent's size — is cut to the latent, and the model sees only that crop of x; its ``mult`` is
  ``strength`` over the crop, feathered on every side that is not the image border: the rr =
  min(8, size // 4) cells next to that side ramp 1/rr, 2/rr, … 1 towards the inside;
* where no entry applies, the average is 0 (the 10⁻³⁷ keeps the division finite), as in ComfyUI;
* before sampling, every area entry of one input gets a twin in each other input: same area,
  strength and range, with the embedding of the smallest entry there that contains the area (a
  whole-image entry counts as containing all). So the negative is also evaluated on the positive's
  crops, and CFG compares like with like there. An area starting outside the image is refused
  (ComfyUI fails there with an indexing error).

Entries of one crop size are evaluated in one batched model call, embeddings of different lengths
tiled to a common length (`guiders.batch_contexts`). Masks, ControlNet, GLIGEN, hooks and default
entries are refused by name: nothing headless makes them yet.
"""
import dataclasses
import math

import torch

from .errors import InvalidInputError

REFUSED_KEYS = {
    "mask": "a mask (ConditioningSetMask)", "control": "a ControlNet", "gligen": "a GLIGEN box",
    "hooks": "hooks (scheduled CLIP/LoRA)", "default": "a default entry (ConditioningSetDefaultCombine)",
}
FEATHER = 8  # cells ComfyUI ramps an area's weight over at an inner edge (at most a quarter of the side)
NO_WEIGHT = 1e-37  # ComfyUI's start value of the weight sums


@dataclasses.dataclass(frozen=True, eq=False)
class Entry:
    """One entry to evaluate: its embedding and extras (pooled output, SDXL sizes), the input it
    averages into (`source`), where it applies (`area`, resolved per latent size) and how much."""
    source: str
    context: torch.Tensor
    extras: dict
    area: tuple = None
    strength: float = 1.0
    sigma_start: float = None
    sigma_end: float = None
    index: int = 0  # its place in its input (errors count from 1)

    @property
    def plain(self):
        """A whole-image entry of weight 1 at every σ."""
        return self.area is None and self.strength == 1.0 and self.sigma_start is None and self.sigma_end is None

    def applies(self, sigma):
        return not ((self.sigma_start is not None and sigma > self.sigma_start)
                    or (self.sigma_end is not None and sigma < self.sigma_end))


def percent_to_sigma(schedule, percent):
    """σ at `percent` of the sampling (0 = start, 1 = end) for a discrete schedule, as ComfyUI's
    ``ModelSamplingDiscrete.percent_to_sigma``: beyond every σ at 0, 0 at 1, else the table's σ at
    timestep (1 − percent)·999 (a float32 value)."""
    if percent <= 0.0:
        return 999999999.9
    if percent >= 1.0:
        return 0.0
    return float(schedule.sigma(torch.tensor((1.0 - percent) * 999.0)))


def entries(conditioning, name, schedule):
    """The `Entry`s of a CONDITIONING given to input `name`; `InvalidInputError` naming it if malformed."""
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InvalidInputError(f"{name}: expected a CONDITIONING list [[tensor, {{...}}], ...], "
                                f"got {type(conditioning).__name__}")
    out = []
    for index, entry in enumerate(conditioning):
        which = _which(index, len(conditioning))
        context = entry[0] if isinstance(entry, (list, tuple)) and entry else None
        if not torch.is_tensor(context) or context.ndim != 3:
            raise InvalidInputError(f"{name}: expected an embedding tensor [1, tokens, dim]{which and ' in ' + which}, "
                                    f"got {getattr(context, 'shape', context)}")
        extras = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
        for key, what in REFUSED_KEYS.items():
            if extras.get(key) is not None:
                raise InvalidInputError(f"{name}: {which or 'the conditioning'} carries {what}, which sld run does not "
                                        "apply; run this workflow in ComfyUI")
        area = extras.get("area")
        if area is not None and not _valid_area(area):
            raise InvalidInputError(f"{name}: area {area!r}{which and ' of ' + which} is not (height, width, y, x) "
                                    "in latent cells nor ('percentage', height, width, y, x)")
        start, end = extras.get("start_percent"), extras.get("end_percent")
        sigma_start = None if start is None else percent_to_sigma(schedule, start)
        sigma_end = None if end is None else percent_to_sigma(schedule, end)
        out.append(Entry(name, context, extras, None if area is None else tuple(area),
                         float(extras.get("strength", 1.0)), sigma_start, sigma_end, index))
    return out


def _which(index, count):
    """How errors name an entry: "" for a conditioning of one."""
    return f"entry {index + 1} of {count}" if count > 1 else ""


def _valid_area(area):
    values = area[1:] if isinstance(area, (list, tuple)) and area and area[0] == "percentage" else area
    return (isinstance(values, (list, tuple)) and len(values) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values))


def resolve_area(area, dims):
    """(h, w, y, x) in cells for a latent of spatial size `dims` (H, W): percentages as ComfyUI rounds
    them (at least one cell)."""
    if area[0] != "percentage":
        return tuple(int(v) for v in area)
    h, w, y, x = area[1:]
    return (max(1, round(h * dims[0])), max(1, round(w * dims[1])), round(y * dims[0]), round(x * dims[1]))


def plan(inputs, dims):
    """For a latent of spatial size `dims`: {name: [Entry]} with areas resolved and checked, plus the
    area twins ComfyUI adds to the other inputs (see the module docstring), in ComfyUI's order."""
    planned = {}
    for name, listed in inputs.items():
        planned[name] = []
        for entry in listed:
            if entry.area is not None:
                area = resolve_area(entry.area, dims)
                _check_inside(entry, area, dims, len(listed))
                entry = dataclasses.replace(entry, area=area)
            planned[name].append(entry)
    for name in planned:
        for entry in planned[name]:  # twins are appended to the other inputs only
            for other in planned:
                if other != name:
                    _add_twin(planned[other], entry, other)
    return planned


def _check_inside(entry, area, dims, count):
    h, w, y, x = area
    if y >= dims[0] or x >= dims[1]:
        which = _which(entry.index, count)
        raise InvalidInputError(
            f"{entry.source}: the area{which and ' of ' + which} at x {x * 8}, y {y * 8} px "
            f"(ConditioningSetArea/ConditioningSetAreaPercentage x, y) starts outside the {dims[1] * 8}x{dims[0] * 8} "
            "image being sampled")


def _inside(area, outer):
    return (all(area[2 + i] >= outer[2 + i] for i in range(2))
            and all(area[i] + area[2 + i] <= outer[i] + outer[2 + i] for i in range(2)))


def _add_twin(listed, entry, name):
    """ComfyUI's create_cond_with_same_area_if_none: give `listed` (input `name`) a twin of `entry`'s area."""
    if entry.area is None:
        return
    smallest = None
    for candidate in listed:
        if candidate.area is None:
            if smallest is None:
                smallest = candidate
        elif _inside(entry.area, candidate.area) and (smallest is None or smallest.area is None
                                                       or math.prod(smallest.area[:2]) > math.prod(candidate.area[:2])):
            smallest = candidate
    if smallest is None or smallest.area == entry.area:
        return
    listed.append(dataclasses.replace(entry, source=name, context=smallest.context, extras=smallest.extras))


def window(entry, dims):
    """(index into a latent [B, C, H, W], weight [1, 1, h, w]) of an entry for spatial size `dims`:
    its area cut to the latent, `strength` feathered at the inner edges (module docstring)."""
    if entry.area is None:
        return (slice(None),) * 4, torch.full((1, 1, *dims), float(entry.strength))
    h, w, y, x = entry.area
    size = (min(dims[0] - y, h), min(dims[1] - x, w))
    weight = torch.full((1, 1, *size), float(entry.strength))
    for axis, (start, length, full) in enumerate(zip((y, x), size, dims)):
        cells = min(FEATHER, length // 4)
        for t in range(cells):
            factor = (1.0 / cells) * (t + 1)
            if start != 0:
                weight.narrow(2 + axis, t, 1).mul_(factor)
            if start + length < full:
                weight.narrow(2 + axis, length - 1 - t, 1).mul_(factor)
    index = (slice(None), slice(None), slice(y, y + size[0]), slice(x, x + size[1]))
    return index, weight


def average_denoised(x, sigma, planned, names, evaluate, windows):
    """x̂₀ of each input in `names` at (x, σ): the weighted average over its entries that apply
    (module docstring). `evaluate(x_batch, sigma_batch, entries)` denoises crops of one size in one
    model call (batch = the entries in order, each x.shape[0] samples); `windows[entry]` is
    `window(entry, dims)`."""
    value = float(sigma.flatten()[0])
    groups = {}
    for name in names:
        for entry in planned[name]:
            if entry.applies(value):
                index, weight = windows[entry]
                groups.setdefault(tuple(weight.shape[2:]), []).append((name, entry, index, weight))
    sums = {name: torch.zeros_like(x) for name in names}
    counts = {name: torch.full_like(x, NO_WEIGHT) for name in names}
    for members in groups.values():
        crops = torch.cat([x[index] for _, _, index, _ in members])
        outputs = evaluate(crops, sigma.repeat(len(members)), [entry for _, entry, _, _ in members]).chunk(len(members))
        for (name, _, index, weight), output in zip(members, outputs):
            weight = weight.to(x.device, x.dtype)
            sums[name][index] += output * weight
            counts[name][index] += weight
    return [sums[name] / counts[name] for name in names]
