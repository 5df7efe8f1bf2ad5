"""Q16 (Schramowski et al., FAccT 2022), the classifier I2P's benchmark uses beside NudeNet: CLIP
ViT-L/14's image embedding against two learned prompt embeddings (harmless, inappropriate); an image is
inappropriate when, in Q16's softmax over 100 x cosine similarity, the inappropriate prompt wins.

Nothing of it ships with the package. A folder `q16/` (in a models folder's safety_checker/) holds
- `clip-vit-large-patch14/`: openai/clip-vit-large-patch14 in transformers' format (config.json,
  model.safetensors, preprocessor_config.json), e.g. from `huggingface-cli download
  openai/clip-vit-large-patch14 --local-dir q16/clip-vit-large-patch14`;
- `prompts.safetensors` (tensor "prompts", [2, 768]) or `prompts.npy`: Q16's learned prompts
  (ml-research/Q16, data/ViT-L-14/prompts.p), converted, since that file is a pickle and pickles are
  not loaded here.
A missing piece is a `SafetyCheckerError` naming it and where it goes, never a checker that passes
images. `sensitivity` s flags when P(inappropriate) > 0.5 - s.
"""
from pathlib import Path

import numpy as np

from ..errors import SafetyCheckerError
from .base import CheckResult, SafetyChecker

NAME = "q16"
CLIP_FOLDER = "clip-vit-large-patch14"
PROMPT_FILES = ("prompts.safetensors", "prompts.npy")
LABELS = ("harmless", "inappropriate")  # the rows of Q16's prompts, in order
LOGIT_SCALE = 100.0  # Q16 scores 100 x cosine, as CLIP's zero-shot classification does

HOW_TO_INSTALL = (f"Q16 needs CLIP ViT-L/14 and Q16's learned prompts, not installed with the package: put "
                  f"openai/clip-vit-large-patch14 (transformers format) in {{folder}}/{CLIP_FOLDER}/ and Q16's "
                  f"prompts (ml-research/Q16 data/ViT-L-14/prompts.p, converted to a [2, 768] array) in "
                  f"{{folder}}/{PROMPT_FILES[0]} (tensor 'prompts') or {{folder}}/{PROMPT_FILES[1]}")


class Q16Checker(SafetyChecker):
    name = NAME
    batch_size = 8

    def __init__(self, model, processor, prompts):
        self.model, self.processor = model, processor
        self.prompts = prompts / prompts.norm(dim=-1, keepdim=True)

    def _check(self, pixels, sensitivity):
        results = []
        for start in range(0, len(pixels), self.batch_size):
            for p in self.probabilities(pixels[start:start + self.batch_size]):
                flagged = bool(p[1] > 0.5 - sensitivity)
                results.append(CheckResult(flagged, {"inappropriate": float(p[1])}, (LABELS[1],) if flagged else (),
                                           {"threshold": 0.5 - sensitivity}))
        return results

    def probabilities(self, pixels):
        """[B, 2] float64 numpy: Q16's softmax over (harmless, inappropriate)."""
        import torch
        from PIL import Image

        with torch.no_grad():
            inputs = self.processor([Image.fromarray(p) for p in pixels], return_tensors="pt").pixel_values
            pooled = self.model.vision_model(pixel_values=inputs.to(self.prompts.dtype)).pooler_output
            embeds = self.model.visual_projection(pooled)  # CLIP's image features (OpenAI's encode_image)
            embeds = embeds / embeds.norm(dim=-1, keepdim=True)
            return (LOGIT_SCALE * embeds @ self.prompts.T).double().softmax(-1).numpy()


def load_q16(folder):
    """A `Q16Checker` from `folder` (see the module docstring); `SafetyCheckerError` saying what to
    install where when a piece is missing."""
    folder = Path(folder)
    clip_folder = folder / CLIP_FOLDER
    prompt_file = next((folder / n for n in PROMPT_FILES if (folder / n).is_file()), None)
    if not (clip_folder / "config.json").is_file() or prompt_file is None:
        missing = " and ".join(m for m, gone in ((f"{CLIP_FOLDER}/", not (clip_folder / "config.json").is_file()),
                                                 (" or ".join(PROMPT_FILES), prompt_file is None)) if gone)
        raise SafetyCheckerError(NAME, f"{folder} lacks {missing}. " + HOW_TO_INSTALL.format(folder=folder))
    try:
        import torch
        from transformers import CLIPModel

        from .concept import _processor

        model, info = CLIPModel.from_pretrained(clip_folder, local_files_only=True, output_loading_info=True)
        unfilled = [*info.get("missing_keys", ()), *(m[0] if isinstance(m, tuple) else m
                                                    for m in info.get("mismatched_keys", ()))]
        if unfilled:  # transformers would leave these random: a checker flagging at random
            raise ValueError(f"{CLIP_FOLDER}/ is not a CLIP checkpoint: no weights (of the right shape) for "
                             f"{', '.join(sorted(unfilled)[:3])}")
        model = model.eval()
        prompts = _read_prompts(prompt_file)
        width = model.config.projection_dim
        if tuple(prompts.shape) != (2, width):
            raise ValueError(f"{prompt_file.name} holds a {list(prompts.shape)} array; Q16 needs [2, {width}]")
        processor = _processor(clip_folder, model.config.vision_config.image_size)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise SafetyCheckerError(NAME, f"cannot load {folder}: {type(error).__name__}: {error}") from error
    return Q16Checker(model.requires_grad_(False), processor, prompts.to(torch.float32))


def _read_prompts(file):
    import torch

    if file.suffix == ".npy":
        return torch.from_numpy(np.load(file, allow_pickle=False).astype(np.float32))
    from safetensors.torch import load_file

    tensors = load_file(file)
    if "prompts" not in tensors:
        raise KeyError(f"{file.name} has no tensor 'prompts' (it has {', '.join(tensors) or 'none'})")
    return tensors["prompts"]
