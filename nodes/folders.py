"""Model files by name, as ComfyUI's `folder_paths` finds them under a `models/` folder.

A name is a path relative to a kind's folder, with "/" separators (`sd15/dreamshaper.safetensors`), so
a ComfyUI `models/` folder works as is. Headless mode also lists diffusers folders (a directory holding
`model_index.json`) found in `checkpoints/` or `diffusers/`. Names never resolve outside their folder.
"""
import os
from pathlib import Path

# ComfyUI's supported_pt_extensions; sld_core loads .safetensors, .sft and weights-only .ckpt/.pt/.pth.
WEIGHT_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")

# kind -> sub-folders searched, in ComfyUI's layout.
KIND_FOLDERS = {
    "checkpoints": ("checkpoints",),
    "diffusers": ("diffusers",),
    "safety_checker": ("safety_checker",),
}
DIFFUSERS_FOLDERS = ("checkpoints", "diffusers")
# A model that is a folder, listed by its folder name: the file marking it, per kind.
FOLDER_MARKERS = {"checkpoints": "model_index.json", "diffusers": "model_index.json", "safety_checker": "config.json"}
MODEL_DIR_FOLDERS = {"checkpoints": DIFFUSERS_FOLDERS, "safety_checker": ("safety_checker",)}


class ModelFolders:
    """The model files under one `models/` directory, listed and resolved by ComfyUI-style names."""

    def __init__(self, models_dir):
        self.root = Path(models_dir)

    def __repr__(self):
        return f"ModelFolders({str(self.root)!r})"

    def names(self, kind):
        """Sorted names of the weight files of `kind`, plus its folder models (diffusers folders for
        checkpoints, folders holding a config.json for safety checkers)."""
        found = set()
        marker = FOLDER_MARKERS[kind]
        for sub in KIND_FOLDERS[kind]:
            found.update(_weight_files(self.root / sub, marker))
        for sub in MODEL_DIR_FOLDERS.get(kind, ()):
            found.update(_model_dirs(self.root / sub, marker))
        return sorted(found)

    def path(self, kind, name):
        """The file or folder a listed `name` of `kind` refers to, or None."""
        subs = KIND_FOLDERS[kind] + (DIFFUSERS_FOLDERS if kind == "checkpoints" else ())
        for sub in subs:
            folder = (self.root / sub).resolve()
            candidate = contained(folder, name)
            if candidate is not None and candidate.exists() and name in self.names(kind):
                return candidate
        return None


def contained(folder, name):
    """`folder/name` resolved, or None when `name` is absolute, has a NUL, or leaves `folder`."""
    if not isinstance(name, str) or not name or "\0" in name or os.path.isabs(name):
        return None
    candidate = (Path(folder) / name).resolve()
    folder = Path(folder).resolve()
    if candidate != folder and folder not in candidate.parents:
        return None
    return candidate


def _weight_files(folder, marker="model_index.json"):
    if not folder.is_dir():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not (Path(dirpath) / d / marker).exists())
        for filename in filenames:
            if filename.lower().endswith(WEIGHT_EXTENSIONS):
                out.append((Path(dirpath) / filename).relative_to(folder).as_posix())
    return out


def _model_dirs(folder, marker="model_index.json"):
    if not folder.is_dir():
        return []
    return [
        p.parent.relative_to(folder).as_posix()
        for p in folder.glob(f"**/{marker}")
        if p.parent != folder
    ]
