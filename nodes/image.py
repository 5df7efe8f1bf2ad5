"""Image nodes: `SLDImageGrid` (tiles a batch into one image) and, for headless mode, ComfyUI's
`LoadImage`, `SaveImage`, `PreviewImage`, `ImageBatch`, `ImageScale`, `ImageScaleBy` and `InvertMask`."""
import hashlib
import math
import random

import numpy as np
from PIL import Image, ImageOps, ImageSequence

from ..sld_core.resample_names import CROP_METHODS, IMAGE_METHODS
from .context import current_runtime
from .errors import NodeInputError
from .folders import contained
from .latent import MAX_RESOLUTION
from .png import prefix_problem, save_images

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def input_image_names():
    folder = current_runtime().input_dir
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def input_image_path(name):
    """The file `name` in the input folder, or None (absent, or outside the folder)."""
    path = contained(current_runtime().input_dir, name)
    return path if path is not None and path.is_file() else None


class LoadImage:
    """ComfyUI's core image loader (headless only): a file from the input folder (--input-dir)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": (input_image_names(), {"image_upload": True})}}

    CATEGORY = "image"
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image):
        import torch

        with Image.open(input_image_path(image)) as img:
            frames = [ImageOps.exif_transpose(frame) for frame in ImageSequence.Iterator(img)]
            frames = [frame for frame in frames if frame.size == frames[0].size]
            pixels, masks = zip(*(_image_and_mask(frame) for frame in frames))
        return (torch.cat(pixels), torch.cat(masks))

    @classmethod
    def IS_CHANGED(cls, image):
        path = input_image_path(image)
        return hashlib.sha256(path.read_bytes()).hexdigest() if path else ""

    @classmethod
    def VALIDATE_INPUTS(cls, image):
        if input_image_path(image) is None:
            return f"Invalid image file: {image} (not a file in the input folder {current_runtime().input_dir})"
        return True


def _image_and_mask(frame):
    import torch

    if frame.mode == "I":
        frame = frame.point(lambda v: v * (1 / 255))
    rgb = torch.from_numpy(np.array(frame.convert("RGB")).astype(np.float32) / 255.0)[None]
    if "A" in frame.getbands() or (frame.mode == "P" and "transparency" in frame.info):
        alpha = np.array(frame.convert("RGBA").getchannel("A")).astype(np.float32) / 255.0
        mask = 1.0 - torch.from_numpy(alpha)
    else:
        mask = torch.zeros((64, 64), dtype=torch.float32)  # ComfyUI's placeholder mask
    return rgb, mask[None]


class SaveImage:
    """ComfyUI's core SaveImage (headless only): PNGs in the output folder with workflow metadata."""

    folder_type = "output"
    compress_level = 4

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The images to save."}),
                "filename_prefix": ("STRING", {"default": "ComfyUI",
                                    "tooltip": "The prefix for the file to save. May include sub-folders and %width%, %height%, %year%… fields."}),
            },
            "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
        }

    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True
    CATEGORY = "image"
    DESCRIPTION = "Saves the input images to the output directory."

    @classmethod
    def VALIDATE_INPUTS(cls, filename_prefix):
        if filename_prefix is None:  # linked: checked when saving
            return True
        problem = prefix_problem(filename_prefix)
        return f"filename_prefix {problem}" if problem else True

    def output_folder(self):
        return current_runtime().output_dir

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        chunks = {}
        if prompt is not None:
            chunks["prompt"] = prompt
        chunks.update(extra_pnginfo or {})
        results = save_images(images, self.output_folder(), filename_prefix, chunks,
                              compress_level=self.compress_level, folder_type=self.folder_type)
        return {"ui": {"images": results}}


class PreviewImage(SaveImage):
    """ComfyUI's core PreviewImage (headless only): PNGs in a temporary folder."""

    folder_type = "temp"
    compress_level = 1

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",)}, "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    def output_folder(self):
        return current_runtime().temp_dir

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        suffix = "".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(5))
        return super().save_images(images, f"ComfyUI_temp_{suffix}", prompt, extra_pnginfo)


class ImageBatch:
    """ComfyUI's core ImageBatch (headless only): image2 appended to image1, resized to match."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"
    CATEGORY = "image"

    def batch(self, image1, image2):
        import torch

        if image1.shape[1:] != image2.shape[1:]:
            image2 = resize_cover(image2, image1.shape[1], image1.shape[2])
        return (torch.cat((image1, image2), dim=0),)


def resize_cover(images, height, width):
    """Centre-crop IMAGE [B,H,W,C] to the aspect of height×width, then resize bilinearly."""
    import torch.nn.functional as F

    h, w = images.shape[1], images.shape[2]
    if h * width > w * height:
        keep = max(1, round(w * height / width))
        images = images[:, (h - keep) // 2:(h - keep) // 2 + keep]
    elif h * width < w * height:
        keep = max(1, round(h * width / height))
        images = images[:, :, (w - keep) // 2:(w - keep) // 2 + keep]
    out = F.interpolate(images.movedim(-1, 1), size=(height, width), mode="bilinear", align_corners=False)
    return out.movedim(1, -1)


class SLDImageGrid:
    """Tiles an image batch into one image, e.g. the same seed without and with SLD side by side."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The batch to tile, in reading order."}),
                "columns": ("INT", {"default": 0, "min": 0, "max": 256,
                                    "tooltip": "Images per row; 0 puts the whole batch in one row."}),
                "spacing": ("INT", {"default": 4, "min": 0, "max": 256, "tooltip": "Gap between images in pixels."}),
                "background": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01,
                                         "tooltip": "Grey level of the gaps (0 black, 1 white)."}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("One image holding the whole batch.",)
    FUNCTION = "tile"
    CATEGORY = "SLD/image"
    DESCRIPTION = "Tiles an image batch into a single grid image (ComfyUI has no core grid node)."

    def tile(self, images, columns, spacing, background):
        import torch

        count, height, width, channels = images.shape
        columns = count if columns == 0 else min(columns, count)
        rows = math.ceil(count / columns)
        grid = torch.full((1, rows * height + (rows - 1) * spacing, columns * width + (columns - 1) * spacing, channels),
                          float(background), dtype=images.dtype)
        for k in range(count):
            top, left = (k // columns) * (height + spacing), (k % columns) * (width + spacing)
            grid[0, top:top + height, left:left + width] = images[k]
        return (grid,)


def _scaled_image(image, upscale_method, width, height, crop, name):
    from ..sld_core.resample import upscale

    if width < 1 or height < 1:
        raise NodeInputError(name, f"the result would be {width}x{height} (from {image.shape[2]}x{image.shape[1]}); "
                                   "each side must be at least 1 pixel")
    return upscale(image.movedim(-1, 1), width, height, upscale_method, crop).movedim(1, -1)


class ImageScale:
    """ComfyUI's core ImageScale (headless only): resize images to a size in pixels."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "upscale_method": (list(IMAGE_METHODS),),
            "width": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                              "tooltip": "Target width; 0 keeps the aspect ratio from the height."}),
            "height": ("INT", {"default": 512, "min": 0, "max": MAX_RESOLUTION, "step": 1,
                               "tooltip": "Target height; 0 keeps the aspect ratio from the width."}),
            "crop": (list(CROP_METHODS),),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image, upscale_method, width, height, crop):
        if width == 0 and height == 0:
            return (image,)
        if width == 0:
            width = max(1, round(image.shape[2] * height / image.shape[1]))
        elif height == 0:
            height = max(1, round(image.shape[1] * width / image.shape[2]))
        return (_scaled_image(image, upscale_method, width, height, crop, "width"),)


class ImageScaleBy:
    """ComfyUI's core ImageScaleBy (headless only): resize images by a factor."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "image": ("IMAGE",),
            "upscale_method": (list(IMAGE_METHODS),),
            "scale_by": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
        }}

    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "upscale"
    CATEGORY = "image/upscaling"

    def upscale(self, image, upscale_method, scale_by):
        width, height = round(image.shape[2] * scale_by), round(image.shape[1] * scale_by)
        return (_scaled_image(image, upscale_method, width, height, "disabled", "scale_by"),)


class InvertMask:
    """ComfyUI's core InvertMask (headless only): 1 − mask."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mask": ("MASK",)}}

    RETURN_TYPES = ("MASK",)
    FUNCTION = "invert"
    CATEGORY = "mask"

    def invert(self, mask):
        return (1.0 - mask,)
