"""Batch bookkeeping of LATENT dicts, as ComfyUI's ``RepeatLatentBatch`` and ``LatentFromBatch`` keep it.

``batch_index`` lists, for each latent of a batch, its position in the batch it came from; the seed's
noise is drawn per position (`noise.prepare_noise`), so a latent taken out of a batch, or repeated,
gets the noise it had there. ``noise_mask`` has its own batch size: one mask serves every latent.
"""
import math

import torch

from .errors import InvalidInputError


def repeat_to_batch(tensor, batch):
    """``tensor`` cut or tiled along its first axis to ``batch`` entries."""
    if tensor.shape[0] >= batch:
        return tensor[:batch]
    return tensor.repeat(math.ceil(batch / tensor.shape[0]), *([1] * (tensor.ndim - 1)))[:batch]


def repeat_latent(latent, amount):
    """The batch ``amount`` times over. A ``batch_index`` list continues past its highest entry
    (copy k is offset by k × its span); a mask batch of more than one is repeated with the latents."""
    out = dict(latent)
    samples = latent["samples"]
    out["samples"] = samples.repeat(amount, *([1] * (samples.ndim - 1)))
    mask = latent.get("noise_mask")
    if mask is not None and mask.shape[0] > 1:
        out["noise_mask"] = mask.repeat(amount, *([1] * (mask.ndim - 1)))
    if "batch_index" in latent:
        index = list(latent["batch_index"])
        span = max(index) - min(index) + 1
        out["batch_index"] = index + [i + copy * span for copy in range(1, amount) for i in index]
    return out


def latent_from_batch(latent, batch_index, length):
    """``length`` latents from position ``batch_index`` (fewer when the batch ends first), with their
    ``batch_index`` entries (their positions when the latent had none) and their masks."""
    samples = latent["samples"]
    size = samples.shape[0]
    if not 0 <= batch_index < size:
        raise InvalidInputError(
            f"batch_index: {batch_index} is past the end of a batch of {size} latent{'s' if size > 1 else ''} "
            f"(positions 0 to {size - 1})")
    length = min(length, size - batch_index)
    out = dict(latent)
    out["samples"] = samples[batch_index:batch_index + length].clone()
    mask = latent.get("noise_mask")
    if mask is not None:
        if mask.shape[0] > 1:
            mask = repeat_to_batch(mask, size)[batch_index:batch_index + length]  # a shorter batch repeats
        out["noise_mask"] = mask.clone()
    if "batch_index" in latent:
        out["batch_index"] = list(latent["batch_index"])[batch_index:batch_index + length]
    else:
        out["batch_index"] = list(range(batch_index, batch_index + length))
    return out


def check_samples(latent, name="samples"):
    """A LATENT dict's samples tensor, or an error naming the input."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not torch.is_tensor(samples) or samples.ndim != 4:
        raise InvalidInputError(f"{name}: expected a LATENT {{'samples': Tensor[B,C,H,W]}}, got "
                                f"{getattr(samples, 'shape', type(latent).__name__)}")
    return samples
