"""Stable Diffusion's concept checker (diffusers' `StableDiffusionSafetyChecker`), from local weights.

The model is diffusers' own class: CLIP's vision tower and projection, and cosine similarity to 17
concept and 3 "special care" embeddings with per-row thresholds stored in the weights. The decision
rule is diffusers' `forward`, reproduced exactly (sld_math.md §2.1): per image, special-care scores
first, in order, each `round(cos − w + adjustment, 3)`; once one is `> 0` the adjustment is 0.01 for
the remaining special-care and all 17 concepts; a concept fires when its rounded score is strictly
`> 0`.

`sensitivity` s is an offset on that rule (0 = diffusers' rule exactly): every score is
`round(cos − w + s, 3)` until a special-care concept fires, `round(cos − w + s + 0.01, 3)` after.
diffusers' base adjustment is a constant 0 that a special-care hit *sets* to 0.01; with a non-zero
base that would throw the offset away (a stricter s would turn laxer, a laxer one stricter, on exactly
the images special care is for), so we keep s and add the 0.01 to it.

Weights load from a diffusers folder (`config.json` + `model.safetensors` or `pytorch_model.bin`, as
in `CompVis/stable-diffusion-safety-checker` or an SD pipeline's `safety_checker/`) or from a single
`.safetensors`/`.bin` file, whose CLIP config is inferred from tensor shapes (heads are 64 wide, as
in every CLIP vision tower). Missing or wrongly-shaped weights are refused: a checker built from
random weights would pass or block at random.

Preprocessing is transformers' CLIP image processor at the model's input size (224 for the real
checker): resize the short side (bicubic), centre crop, normalise with CLIP's mean and std. We use
the PIL backend explicitly (`CLIPImageProcessorPil`): it is what `CLIPImageProcessor` was before
transformers 5, when SD's thresholds were set, and transformers 5 falls back to it anyway (with a
warning) when torchvision is absent; the torchvision backend may resize slightly differently.
"""
import json
import re
from pathlib import Path

import torch

from ..errors import CheckpointError, SafetyCheckerError
from .base import CheckResult, SafetyChecker

SPECIAL_CARE_ADJUSTMENT = 0.01  # diffusers' adjustment once a special-care concept fires (added to s here)
WEIGHT_FILES = ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "pytorch_model.fp16.bin")
PREPROCESSOR_FILES = ("preprocessor_config.json", "../feature_extractor/preprocessor_config.json")
CLIP_HEAD_WIDTH = 64


def concept_decision(special_cos, concept_cos, special_weights, concept_weights, adjustment=0.0):
    """diffusers' per-image rule over float32 cosine matrices `[B,3]`, `[B,17]` and the stored
    thresholds, same arithmetic, same order. `adjustment` is the base offset (the node's sensitivity;
    diffusers: 0.0); after a special-care hit the scores use `adjustment + 0.01`."""
    special_weights = [float(w) for w in special_weights]
    concept_weights = [float(w) for w in concept_weights]
    results = []
    for special_row, concept_row in zip(special_cos, concept_cos):
        adjust = adjustment
        scores, special_care, concepts = {}, [], []
        for k, threshold in enumerate(special_weights):
            score = round(special_row[k] - threshold + adjust, 3)
            scores[f"special_{k}"] = round(float(score), 3)
            if score > 0:
                special_care.append(k)
                adjust = adjustment + SPECIAL_CARE_ADJUSTMENT
        for j, threshold in enumerate(concept_weights):
            score = round(concept_row[j] - threshold + adjust, 3)
            scores[f"concept_{j}"] = round(float(score), 3)
            if score > 0:
                concepts.append(f"concept_{j}")
        details = {"adjustment": adjustment, "special_care": [f"special_{k}" for k in special_care]}
        results.append(CheckResult(bool(concepts), scores, tuple(concepts), details))
    return results


class ConceptChecker(SafetyChecker):
    """A loaded `StableDiffusionSafetyChecker` with its image processor."""

    batch_size = 8  # images per forward pass

    def __init__(self, model, processor, name="concept checker"):
        self.model, self.processor, self.name = model, processor, name

    def _check(self, pixels, sensitivity):
        results = []
        for start in range(0, len(pixels), self.batch_size):
            special, concept = self.cosines(pixels[start:start + self.batch_size])
            results += concept_decision(special, concept, self.model.special_care_embeds_weights.tolist(),
                                        self.model.concept_embeds_weights.tolist(), adjustment=sensitivity)
        return results

    @torch.no_grad()
    def cosines(self, pixels):
        """(special-care, concept) cosine similarities as float32 numpy, computed as diffusers does."""
        from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance
        from PIL import Image

        clip_input = self.processor([Image.fromarray(p) for p in pixels], return_tensors="pt").pixel_values
        parameter = next(self.model.parameters())
        clip_input = clip_input.to(parameter.device, parameter.dtype)
        image_embeds = self.model.visual_projection(self.model.vision_model(clip_input)[1])
        special = cosine_distance(image_embeds, self.model.special_care_embeds).cpu().float().numpy()
        concept = cosine_distance(image_embeds, self.model.concept_embeds).cpu().float().numpy()
        return special, concept


def load_concept_checker(path, device="cpu", name=None):
    """A `ConceptChecker` from a diffusers folder or a single weights file; `SafetyCheckerError` if
    it cannot be built exactly from the given weights."""
    path = Path(path)
    name = name or path.name
    try:
        if path.is_dir():
            config = _folder_config(path)
            state = canonical_keys(_read_state(_folder_weights(path)))
        else:
            state = canonical_keys(_read_state(path))
            config = inferred_config(state)
        model = _build(config, state, device)
        processor = _processor(path, config.vision_config.image_size)
    except SafetyCheckerError:
        raise
    except CheckpointError as error:  # name the file: its reason is often a bare predicate ("is not a ...")
        joint = " " if error.reason.startswith(("is ", "holds ")) else ": "
        raise SafetyCheckerError(name, f"{error.path}{joint}{error.reason}") from error
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as error:
        raise SafetyCheckerError(name, f"{type(error).__name__}: {error}") from error
    return ConceptChecker(model, processor, name=name)


def _folder_config(folder):
    from transformers import CLIPConfig

    file = folder / "config.json"
    if not file.is_file():
        raise ValueError(f"{folder.name}/config.json is missing")
    return CLIPConfig.from_dict(json.loads(file.read_text()))


def _folder_weights(folder):
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"no weights in {folder.name}/ (expected {' or '.join(WEIGHT_FILES[::2])})")


def _read_state(file):
    from ..models.tensor_files import read_safetensors, read_weights_only_pickle

    if file.suffix.lower() in (".safetensors", ".sft"):
        return read_safetensors(file)
    return read_weights_only_pickle(file)


VISION = "vision_model."  # canonical prefix (transformers 5); checkpoints on disk have it twice
LEGACY_VISION = "vision_model.vision_model."


def canonical_keys(state):
    """Weights with the vision tower under `vision_model.`: SD's checkpoints (written by transformers
    4) nest it twice, `vision_model.vision_model.`, and transformers 5 renames it on loading too."""
    return {VISION + k[len(LEGACY_VISION):] if k.startswith(LEGACY_VISION) else k: v for k, v in state.items()}


def inferred_config(state):
    """The CLIPConfig a single checker file implies (vision tower, projection); the text tower is
    never built."""
    from transformers import CLIPConfig

    try:
        hidden = state[VISION + "embeddings.class_embedding"].shape[0]
        patch = state[VISION + "embeddings.patch_embedding.weight"].shape[-1]
        positions = state[VISION + "embeddings.position_embedding.weight"].shape[0]
        intermediate = state[VISION + "encoder.layers.0.mlp.fc1.weight"].shape[0]
        projection = state["visual_projection.weight"].shape[0]
    except KeyError as missing:
        raise ValueError(f"not a Stable Diffusion safety checker: weight {missing} is missing") from None
    layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(re.escape(VISION) + r"encoder\.layers\.(\d+)\.", k)))
    side = round((positions - 1) ** 0.5)
    if side * side != positions - 1:
        raise ValueError(f"position embedding of {positions} rows is not a square grid plus one")
    vision = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                  num_attention_heads=max(1, hidden // CLIP_HEAD_WIDTH), patch_size=patch, image_size=side * patch)
    return CLIPConfig(vision_config=vision, projection_dim=projection)


def _build(config, state, device):
    """diffusers' class on the meta device, then exactly `state`'s tensors (nothing left random)."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

    with torch.device("meta"):
        model = StableDiffusionSafetyChecker(config)
    expected = model.state_dict()
    if any(k.startswith(LEGACY_VISION) for k in expected):  # transformers 4 nests the tower twice
        state = {LEGACY_VISION + k[len(VISION):] if k.startswith(VISION) else k: v for k, v in state.items()}
    state = {k: v for k, v in state.items() if k in expected}  # e.g. an old persistent position_ids
    missing = sorted(expected.keys() - state.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    if missing or wrong:
        detail = "; ".join(f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                           for label, keys in (("missing", missing), ("wrong shape", wrong)) if keys)
        raise ValueError(f"the weights do not fit a safety checker ({detail})")
    model.load_state_dict({k: v.to(device, torch.float32) for k, v in state.items()}, strict=True, assign=True)
    for module_name, buffer in list(model.named_buffers()):
        if buffer.is_meta:  # CLIP's non-persistent position_ids: 0..n-1
            owner_name, _, buffer_name = module_name.rpartition(".")
            owner = model.get_submodule(owner_name)
            owner.register_buffer(buffer_name, torch.arange(buffer.shape[-1], device=device).expand(buffer.shape),
                                  persistent=False)
    return model.eval().requires_grad_(False)


def _processor(path, image_size):
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers < 5: CLIPImageProcessor is the PIL one
        from transformers import CLIPImageProcessor as Processor

    folder = path if path.is_dir() else None
    for name in PREPROCESSOR_FILES if folder else ():
        file = (folder / name).resolve()
        if file.is_file():
            return Processor(**{k: v for k, v in json.loads(file.read_text()).items()
                                if not k.startswith("_") and k not in ("image_processor_type", "feature_extractor_type")})
    return Processor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
