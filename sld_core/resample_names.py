"""The resampling methods ComfyUI's upscale nodes offer, importable without torch (`sld nodes` lists
them without loading it); `resample` implements them."""
PLAIN_METHODS = ("nearest-exact", "bilinear", "area", "bicubic")
LATENT_METHODS = PLAIN_METHODS + ("bislerp",)  # LatentUpscale, LatentUpscaleBy
IMAGE_METHODS = PLAIN_METHODS + ("lanczos",)  # ImageScale, ImageScaleBy
CROP_METHODS = ("disabled", "center")
