"""Checkpoints as ComfyUI's own MODEL, CLIP and VAE objects, for `SLDCheckpointLoader` inside ComfyUI.

Imported only when ComfyUI is the host (it imports `comfy.*` at module level). Returning ComfyUI's
native objects means every socket the editor lets a user connect to the loader's outputs (ComfyUI's
KSampler, CLIP Text Encode, LoRA loader, VAE Decode/Encode, CLIP Set Last Layer, ...) can use them.

A file in models/checkpoints loads exactly as ComfyUI's `CheckpointLoaderSimple` loads it
(`comfy.sd.load_checkpoint_guess_config`, with the embeddings folder). The embedded demo model is a
reduced-width SD1.x, which ComfyUI's family detection does not recognise (its SD1.5 entry matches the
full widths only), so it is assembled here from ComfyUI's public classes configured from the file's
tensor shapes: the SD1.5 model config over the detected UNet config (same latent format and noise
schedule as SD1.5, which the demo was trained with), ComfyUI's SD1 text encoder with the demo's
widths, and ComfyUI's AutoencoderKL-based `VAE` with the demo's channel multipliers.
"""
import logging

import comfy.model_detection
import comfy.model_management
import comfy.model_patcher
import comfy.sd
import comfy.sd1_clip
import comfy.supported_models
import comfy.supported_models_base
import comfy.utils
import folder_paths

log = logging.getLogger(__name__)

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer.text_model."


def checkpoint_names():
    return list(folder_paths.get_filename_list("checkpoints"))


def checkpoint_path(name):
    return folder_paths.get_full_path("checkpoints", name)


def load_checkpoint(path):
    """(MODEL, CLIP, VAE) of a checkpoint file, as ComfyUI's CheckpointLoaderSimple gives them."""
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(
        path, output_vae=True, output_clip=True, embedding_directory=folder_paths.get_folder_paths("embeddings"))
    return model, clip, vae


def load_reduced_sd1(path):
    """(MODEL, CLIP, VAE) of a narrower-than-SD1.5 SD1.x single file (the embedded demo model)."""
    sd = comfy.utils.load_torch_file(path)
    return _model(sd), _clip(sd), _vae(sd)


def _model(sd):
    unet_config = comfy.model_detection.detect_unet_config(sd, UNET_PREFIX)
    # SD15's noise schedule, latent format, ε prediction and its 8 attention heads are the demo's;
    # only the widths differ, and those come from the detected config.
    model_config = comfy.supported_models.SD15(unet_config)
    load_device = comfy.model_management.get_torch_device()
    parameters = comfy.utils.calculate_parameters(sd, UNET_PREFIX)
    dtype = comfy.model_management.unet_dtype(model_params=parameters,
                                              supported_dtypes=model_config.supported_inference_dtypes,
                                              weight_dtype=comfy.utils.weight_dtype(sd, UNET_PREFIX))
    model_config.set_inference_dtype(dtype, comfy.model_management.unet_manual_cast(
        dtype, load_device, model_config.supported_inference_dtypes))
    model = model_config.get_model(sd, UNET_PREFIX, device=comfy.model_management.unet_inital_load_device(parameters, dtype))
    model.load_model_weights(sd, UNET_PREFIX)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=comfy.model_management.unet_offload_device())


def _clip(sd):
    width = sd[TEXT_PREFIX + "embeddings.token_embedding.weight"].shape[1]
    layers = len({k.split(".")[5] for k in sd if k.startswith(TEXT_PREFIX + "encoder.layers.")})
    text_config = {
        "hidden_size": width, "projection_dim": width, "num_hidden_layers": layers,
        "intermediate_size": sd[TEXT_PREFIX + "encoder.layers.0.mlp.fc1.weight"].shape[0],
        # CLIP's heads are 64 wide; a single-file checkpoint does not store the count (the same rule
        # sld_core.models.config_inference applies).
        "num_attention_heads": max(1, width // 64),
    }
    clip_sd = comfy.supported_models.SD15({}).process_clip_state_dict(dict(sd))
    target = comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel)
    # Textual-inversion embeddings are made for 768-wide CLIP-L, so the demo's encoder takes none.
    clip = comfy.sd.CLIP(target, embedding_directory=None, tokenizer_data=clip_sd,
                         parameters=comfy.utils.calculate_parameters(clip_sd),
                         model_options={"clip_l_model_config": text_config})
    missing, _ = clip.load_sd(clip_sd, full_model=True)
    missing = [k for k in missing if "text_projection" not in k and "logit_scale" not in k]
    if missing:
        raise RuntimeError(f"the demo model's text encoder lacks {missing[:5]}")
    return clip


def _vae(sd):
    vae_sd = comfy.utils.state_dict_prefix_replace(sd, {VAE_PREFIX: ""}, filter_keys=True)
    ch = vae_sd["encoder.conv_in.weight"].shape[0]
    levels = sorted({int(k.split(".")[2]) for k in vae_sd if k.startswith("encoder.down.")})
    ddconfig = {
        "double_z": True, "z_channels": vae_sd["decoder.conv_in.weight"].shape[1], "resolution": 256,
        "in_channels": 3, "out_ch": 3, "ch": ch, "attn_resolutions": [], "dropout": 0.0,
        "ch_mult": [vae_sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in levels],
        "num_res_blocks": len({k.split(".")[4] for k in vae_sd if k.startswith("encoder.down.0.block.")}),
    }
    config = {"params": {"ddconfig": ddconfig, "embed_dim": vae_sd["post_quant_conv.weight"].shape[1]}}
    return comfy.sd.VAE(sd=vae_sd, config=config)
