"""The added conditioning SDXL's UNet receives besides the prompt (diffusers' ``text_time`` embedding).

ComfyUI builds it per conditioning at sampling time (``comfy/model_base.py`` ``SDXL.encode_adm``,
``SDXLRefiner.encode_adm``, ``comfy/samplers.py`` ``encode_model_conds``), from the CONDITIONING's
extra dict:

* base: ``[height, width, crop_h, crop_w, target_height, target_width]``; where the dict has no
  ``width``/``height`` (a plain CLIPTextEncode) they are the latent's size in pixels (8× its cells),
  crops default to 0 and the target size to (width, height);
* refiner: ``[height, width, crop_h, crop_w, aesthetic_score]``, the score defaulting to 6 for the
  positive prompt and 2.5 for the negative one.

Each number is embedded as a 256-wide sinusoid (cos half first) and concatenated after the pooled
text; diffusers' UNet does that embedding itself from ``time_ids`` (``add_time_proj``, with SDXL's
``flip_sin_to_cos=True``, ``freq_shift=0``), so this module returns ``time_ids`` and ``text_embeds``.
"""
import torch

LATENT_CELL = 8  # pixels per latent cell of the SDXL VAE
REFINER_SCORE = {"positive": 6.0, "negative": 2.5}


def time_ids(extra, latent_shape, kind="sdxl", prompt_type="positive"):
    """The size numbers for one conditioning's ``extra`` dict and a latent of ``latent_shape``
    ([B, C, h, w]): a float32 tensor of 6 ("sdxl") or 5 ("refiner") values."""
    width = extra.get("width", latent_shape[-1] * LATENT_CELL)
    height = extra.get("height", latent_shape[-2] * LATENT_CELL)
    crop_w, crop_h = extra.get("crop_w", 0), extra.get("crop_h", 0)
    if kind == "refiner":
        score = extra.get("aesthetic_score", REFINER_SCORE[prompt_type])
        values = [height, width, crop_h, crop_w, score]
    elif kind == "sdxl":
        values = [height, width, crop_h, crop_w, extra.get("target_height", height), extra.get("target_width", width)]
    else:
        raise ValueError(f"unknown added-conditioning kind {kind!r}; expected 'sdxl' or 'refiner'")
    return torch.tensor(values, dtype=torch.float32)


def added_cond_kwargs(extra, latent_shape, kind="sdxl", prompt_type="positive", batch=1):
    """diffusers' ``added_cond_kwargs`` for one conditioning, repeated over ``batch``:
    {"text_embeds": pooled [batch, P], "time_ids": [batch, 6 or 5]}."""
    pooled = extra.get("pooled_output")
    if pooled is None:
        raise ValueError("an SDXL conditioning needs its pooled_output (encode the prompt with an SDXL CLIP)")
    ids = time_ids(extra, latent_shape, kind, prompt_type)
    return {"text_embeds": pooled.reshape(1, -1).float().expand(batch, -1),
            "time_ids": ids.unsqueeze(0).expand(batch, -1)}
