"""Files `sld serve` reads for /view and writes for /upload/image, never outside their folders.

A name or subfolder is checked as text first (no NUL, no absolute path or drive, no `..`, no hidden
part: the history database and the executor's temporary files start with a dot), then the resolved
path, symlinks followed, must still lie inside the resolved folder. Only image files are served or
accepted, and an upload must decode as an image of sane size before anything is written.
"""
import io
import os
import re
import secrets
import warnings
from pathlib import Path

from ...nodes.image import IMAGE_EXTENSIONS

MAX_PIXELS = 64 * 2**20  # an upload may decode to at most this many pixels (a PNG bomb is a few KiB)
MAX_NAME_BYTES = 200


class Refused(Exception):
    """A request for a file that is not allowed; `status` is the HTTP status to answer."""

    def __init__(self, status, message):
        self.status, self.message = status, message
        super().__init__(message)


def _check_part(part, what):
    if not part or part in (".", ".."):
        raise Refused(400, f"{what} {part!r}: '.', '..' and empty names are not allowed")
    if "\0" in part:
        raise Refused(400, f"{what} contains a NUL byte")
    if part.startswith("."):
        raise Refused(400, f"{what} {part!r}: hidden names are not served or written")
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError:
        raise Refused(400, f"{what} holds characters that cannot be in a file name") from None
    if size > MAX_NAME_BYTES:
        raise Refused(400, f"{what} is longer than {MAX_NAME_BYTES} bytes")


def split_subfolder(subfolder):
    """The parts of a relative subfolder ('' for none); `Refused` for anything else."""
    if not subfolder:
        return []
    if "\0" in subfolder:
        raise Refused(400, "subfolder contains a NUL byte")
    if subfolder.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", subfolder) or os.path.isabs(subfolder):
        raise Refused(400, f"subfolder {subfolder!r} is absolute; it must be relative to the folder")
    parts = [p for p in re.split(r"[\\/]", subfolder) if p != ""]
    for part in parts:
        _check_part(part, "subfolder part")
    return parts


def check_filename(filename):
    if not isinstance(filename, str) or not filename:
        raise Refused(400, "filename is missing")
    if "\0" in filename:
        raise Refused(400, "filename contains a NUL byte")
    if "/" in filename or "\\" in filename or re.match(r"^[A-Za-z]:", filename):
        raise Refused(400, f"filename {filename!r} must be a plain file name; put folders in subfolder")
    _check_part(filename, "filename")
    if not filename.lower().endswith(IMAGE_EXTENSIONS):
        raise Refused(400, f"filename {filename!r}: only image files ({', '.join(IMAGE_EXTENSIONS)}) are allowed")


def inside(folder, subfolder, filename=None):
    """The path `folder/subfolder[/filename]` after the checks above, resolved; 403 if it leads out."""
    parts = split_subfolder(subfolder)
    if filename is not None:
        check_filename(filename)
        parts.append(filename)
    base = Path(folder).resolve()
    path = base.joinpath(*parts).resolve()
    if path != base and base not in path.parents:
        raise Refused(403, "the path leads outside its folder (through a symlink)")
    return path


def check_image(data):
    """Refuse bytes that do not decode as one image of at most MAX_PIXELS pixels (runs PIL fully)."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                if width * height > MAX_PIXELS:
                    raise Refused(413, f"the image is {width}x{height}; at most {MAX_PIXELS // 2**20} megapixels")
                image.load()
    except Refused:
        raise
    except Exception as error:  # PIL raises many types for damaged or foreign files
        raise Refused(400, f"the upload is not an image that can be decoded: {type(error).__name__}") from None


def save_upload(folder, subfolder, filename, data, overwrite):
    """Write an uploaded image as ComfyUI does: with `overwrite`, replace; else keep an identical file
    as is, and name a different one 'name (1).png', 'name (2).png', ... Returns the name used. Each file
    is written whole under a temporary name and then linked or renamed into place."""
    target = inside(folder, subfolder, filename)
    base = Path(folder).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.parent.resolve() != target.parent or (base not in target.parent.parents and target.parent != base):
        raise Refused(403, "the path leads outside its folder (through a symlink)")
    tmp = target.parent / f".upload.{secrets.token_hex(6)}.tmp"
    with open(tmp, "xb") as handle:
        handle.write(data)
    try:
        if overwrite:
            os.replace(tmp, target)
            return target.name
        stem, suffix = os.path.splitext(filename)
        candidate, i = target, 1
        while True:
            try:
                os.link(tmp, candidate)  # fails if the name exists: no race with another upload
                return candidate.name
            except FileExistsError:
                if candidate.is_file() and candidate.read_bytes() == data:
                    return candidate.name
                candidate = target.parent / f"{stem} ({i}){suffix}"
                i += 1
    finally:
        if tmp.exists():
            tmp.unlink()
