"""Node parity for the latent and image nodes (area "latent" of `comfyui-check --node-parity`):
LatentUpscale (every method, crop center, a 0 side), LatentUpscaleBy, ImageScale (lanczos included),
ImageScaleBy, RepeatLatentBatch, LatentFromBatch, SetLatentNoiseMask, VAEEncodeForInpaint and
InvertMask, the masks from LoadImage's alpha, sampled by KSampler and SLDKSampler."""
import numpy as np
from PIL import Image

from comfyui_check_graphs import _decode_save, node_adder, prepare_prompt

FAMILY = "sd15"
HOLE_IMAGE = "parity_latent_hole.png"  # 76x68: not a multiple of 8, so VAEEncodeForInpaint crops


def prepare_files(base):
    """An RGBA image with a smooth picture and an off-centre transparent hole, in the input folder."""
    yy, xx = np.mgrid[0:68, 0:76]
    rgb = np.stack([128 + 100 * np.sin(xx / 9.0), 128 + 100 * np.cos(yy / 7.0), (xx + yy) * 255 // 142], -1)
    alpha = np.full((68, 76), 255)
    alpha[20:44, 30:61] = 0  # the hole: repainted
    alpha[20:44, 28:30] = 128  # a half-transparent edge (mask 0.5 rounds down: kept)
    Image.fromarray(np.dstack([rgb, alpha]).astype(np.uint8)).save(base / "input" / HOLE_IMAGE)
    return {"image": HOLE_IMAGE, "size": "76x68", "hole": "31x24 at (30, 20)"}


def node_parity_prompt(base_prompt, ckpt_name, steps):
    """sld_txt2img's loader, texts and latent; one KSampler image whose latent feeds the upscale
    branches and whose decoded image feeds the image-scale branches; batch, noise-mask and inpaint
    branches sampled again. Every branch decoded (if a latent) and saved as node_<Node>_<what>."""
    steps = max(int(steps or 2), 2)
    p = prepare_prompt(base_prompt, ckpt_name, steps)
    for node_id in ("6", "7", "8"):
        p.pop(node_id)
    model, pos, neg, concept, empty, vae = ["1", 0], ["2", 0], ["3", 0], ["4", 0], ["5", 0], ["1", 2]

    node = node_adder(p)

    def ksampler(nid, latent, seed, denoise=1.0, sampler="euler"):
        return node(nid, "KSampler", model=model, seed=seed, steps=steps, cfg=7.0, sampler_name=sampler,
                    scheduler="normal", positive=pos, negative=neg, latent_image=latent, denoise=denoise)

    def save_latent(nid, source, prefix):
        _decode_save(p, nid, source[0], vae, prefix)
        p[f"{nid}d"]["inputs"]["samples"] = source

    def save_image(nid, source, prefix):
        node(f"{nid}s", "SaveImage", images=source, filename_prefix=prefix)

    base = ksampler("base", empty, 21)
    image = node("based", "VAEDecode", samples=base, vae=vae)
    for method in ("nearest-exact", "bilinear", "area", "bicubic", "bislerp"):
        tag = method.replace("-", "_")
        up = node(f"up_{tag}", "LatentUpscale", samples=base, upscale_method=method, width=96, height=96, crop="disabled")
        save_latent(f"up_{tag}", up, f"node_LatentUpscale_{tag}")
    crop = node("up_crop", "LatentUpscale", samples=base, upscale_method="bislerp", width=128, height=64, crop="center")
    save_latent("up_crop", crop, "node_LatentUpscale_center_bislerp_128x64")
    aspect = node("up_aspect", "LatentUpscale", samples=base, upscale_method="bilinear", width=0, height=80, crop="disabled")
    save_latent("up_aspect", aspect, "node_LatentUpscale_width_0")
    by = node("by", "LatentUpscaleBy", samples=base, upscale_method="bislerp", scale_by=1.5)
    save_latent("by", by, "node_LatentUpscaleBy_bislerp_1.5")
    down = node("down", "LatentUpscaleBy", samples=base, upscale_method="area", scale_by=0.5)
    save_latent("down", down, "node_LatentUpscaleBy_area_0.5")

    save_image("is_lz", node("is_lz", "ImageScale", image=image, upscale_method="lanczos", width=96, height=80,
                             crop="center"), "node_ImageScale_lanczos_center")
    save_image("is_bc", node("is_bc", "ImageScale", image=image, upscale_method="bicubic", width=100, height=0,
                             crop="disabled"), "node_ImageScale_bicubic_height_0")
    save_image("isb_lz", node("isb_lz", "ImageScaleBy", image=image, upscale_method="lanczos", scale_by=0.75),
               "node_ImageScaleBy_lanczos_0.75")
    save_image("isb_ne", node("isb_ne", "ImageScaleBy", image=image, upscale_method="nearest-exact", scale_by=1.5),
               "node_ImageScaleBy_nearest_exact_1.5")

    # Batches: positions 1-2 of a batch of 3, then twice over (batch_index 1, 2, 3, 4): the seed's noise per position.
    batch = node("rep", "RepeatLatentBatch", samples=empty, amount=3)
    taken = node("from", "LatentFromBatch", samples=batch, batch_index=1, length=2)
    save_latent("from_s", ksampler("from_s", taken, 22), "node_LatentFromBatch_1_2_KSampler")
    again = node("rep2", "RepeatLatentBatch", samples=taken, amount=2)
    save_latent("rep2_s", ksampler("rep2_s", again, 22), "node_RepeatLatentBatch_batch_index_KSampler")

    # Masks from LoadImage's alpha (1 - alpha), at the image's 76x68 size, resized to the latent by the sampler.
    load = node("load", "LoadImage", image=HOLE_IMAGE)
    alpha_mask = ["load", 1]
    scaled = node("load_sc", "ImageScale", image=["load", 0], upscale_method="bilinear", width=64, height=64, crop="disabled")
    encoded = node("enc", "VAEEncode", pixels=scaled, vae=vae)
    masked = node("setm", "SetLatentNoiseMask", samples=encoded, mask=alpha_mask)
    save_latent("setm_s", ksampler("setm_s", masked, 23, denoise=0.8), "node_SetLatentNoiseMask_KSampler")
    inverted = node("inv", "InvertMask", mask=alpha_mask)
    inv_masked = node("inv_set", "SetLatentNoiseMask", samples=encoded, mask=inverted)
    save_latent("inv_s", ksampler("inv_s", inv_masked, 23, denoise=0.8), "node_InvertMask_SetLatentNoiseMask_KSampler")
    inpaint = node("vei", "VAEEncodeForInpaint", pixels=["load", 0], vae=vae, mask=alpha_mask, grow_mask_by=6)
    save_latent("vei_s", ksampler("vei_s", inpaint, 24), "node_VAEEncodeForInpaint_KSampler_euler")
    save_latent("vei_ddim", ksampler("vei_ddim", inpaint, 24, sampler="ddim"), "node_VAEEncodeForInpaint_KSampler_ddim")
    node("vei_sld", "SLDKSampler", model=model, seed=24, steps=steps, cfg=7.0, sampler_name="euler", scheduler="normal",
         positive=pos, negative=neg, latent_image=inpaint, denoise=1.0, safety_concept=concept, sld_preset="max",
         sld_guidance_scale=5000.0, sld_warmup_steps=0, sld_threshold=1.0, sld_momentum_scale=0.5,
         sld_momentum_beta=0.7)
    save_latent("vei_sldo", ["vei_sld", 0], "node_VAEEncodeForInpaint_SLDKSampler_max")
    return p
