"""Writing IMAGE batches as PNG files the way ComfyUI's SaveImage names and tags them.

Files are `<prefix>_<counter:05>_.png` (the prefix may hold sub-folders and %width%/%height%/%date%
fields), tagged with tEXt chunks `prompt` (the API JSON) and one per `extra_pnginfo` key (`workflow`),
so a result dragged into ComfyUI reopens its graph. Each file is written to a temporary name in the
target folder and renamed into place, so an interrupted run never leaves a truncated PNG. The
prefix can never lead outside the output folder.
"""
import json
import os
import re
import secrets
import time
from pathlib import Path

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo


# A name of the prefix (a folder, or the file name before `_00001_.png`) may have at most this many
# bytes: the file systems' 255, less the counter suffix and the temporary name written first.
MAX_NAME_BYTES = 200


def prefix_problem(prefix):
    """Why `prefix` cannot be a filename_prefix (None when it can): NUL, absolute, escaping, empty."""
    if not isinstance(prefix, str):
        return f"must be text, got {type(prefix).__name__}"
    if "\0" in prefix:
        return "contains a NUL byte"
    shown = repr(prefix) if len(prefix) <= 80 else repr(prefix[:77]) + "..."
    if os.path.isabs(prefix) or prefix.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", prefix):
        return f"{shown} is an absolute path; use a name relative to the output folder"
    parts = re.split(r"[\\/]+", prefix)
    if ".." in parts:
        return f"{shown} contains '..'; images can only be saved inside the output folder"
    if not parts[-1].strip() or parts[-1] == ".":
        return f"{shown} names a folder, not a file name prefix"
    try:
        longest = max(len(part.encode("utf-8")) for part in parts)
    except UnicodeEncodeError:  # a lone surrogate (JSON can hold one): no file system takes it
        return f"{shown} holds characters that cannot be in a file name"
    if longest > MAX_NAME_BYTES:  # with the counter and the temporary name, past the 255-byte limit
        return f"{shown} has a folder or file name of {longest} bytes; at most {MAX_NAME_BYTES}"
    return None


def expand_fields(prefix, width, height):
    """ComfyUI's %width%, %height% and %year%…%second% fields."""
    now = time.localtime()
    fields = {"width": width, "height": height, "year": now.tm_year, "month": f"{now.tm_mon:02}",
              "day": f"{now.tm_mday:02}", "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in fields.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix


def next_counter(folder, filename):
    """1 + the highest counter among `<filename>_<nnnnn>_*.png` in `folder` (1 when none)."""
    pattern = re.compile(re.escape(filename) + r"_(\d+)_")
    counters = [int(m.group(1)) for name in os.listdir(folder) if (m := pattern.match(name))]
    return max(counters, default=0) + 1


def save_images(images, output_dir, filename_prefix, text_chunks, compress_level=4, folder_type="output"):
    """Write each image of an IMAGE batch [B,H,W,3]; returns ComfyUI's `ui.images` entries (+ `path`)."""
    problem = prefix_problem(filename_prefix)
    if problem:
        raise ValueError(f"filename_prefix {problem}")
    height, width = int(images.shape[1]), int(images.shape[2])
    prefix = expand_fields(filename_prefix, width, height)
    output_dir = Path(output_dir).resolve()
    target = (output_dir / prefix).resolve()
    if output_dir not in target.parents:  # symlinked sub-folders included
        raise ValueError(f"filename_prefix {filename_prefix!r} leads outside the output folder {output_dir}")
    folder, filename = target.parent, target.name
    folder.mkdir(parents=True, exist_ok=True)
    counter = next_counter(folder, filename)
    subfolder = folder.relative_to(output_dir).as_posix()
    results = []
    for image in images:
        pixels = np.clip(255.0 * image.detach().cpu().float().numpy(), 0, 255).astype(np.uint8)
        name = f"{filename}_{counter:05}_.png"
        write_png(folder / name, pixels, text_chunks, compress_level)
        results.append({"filename": name, "subfolder": "" if subfolder == "." else subfolder,
                        "type": folder_type, "path": str(folder / name)})
        counter += 1
    return results


def write_png(path, pixels, text_chunks, compress_level):
    """Atomically write an [H,W,3] uint8 array as PNG with tEXt chunks (key -> JSON-able value)."""
    info = PngInfo()
    for key, value in text_chunks.items():
        info.add_text(key, json.dumps(value))
    path = Path(path)
    # A fresh hidden name opened exclusively (mkstemp would make the final file 0600, ignoring umask).
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with open(tmp, "xb") as handle:
            Image.fromarray(pixels).save(handle, format="PNG", pnginfo=info, compress_level=compress_level)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_text_chunks(path):
    """The tEXt chunks of a PNG, JSON-decoded where they are JSON."""
    with Image.open(path) as image:
        chunks = dict(getattr(image, "text", {}) or image.info)
    out = {}
    for key, value in chunks.items():
        if isinstance(value, str):
            try:
                out[key] = json.loads(value)
            except ValueError:
                out[key] = value
    return out
