"""Model files by name, as ComfyUI's `folder_paths` finds them: each kind of model has a list of folders
searched in order (`models/checkpoints`, then the extra paths of an `extra_model_paths.yaml`, ...).

A name is a path relative to one of a kind's folders, with "/" separators (`sd15/dreamshaper.safetensors`),
so a ComfyUI `models/` folder works as is. Diffusers folders (a directory holding `model_index.json`) count
as checkpoints, in `checkpoints/` or `diffusers/`; safety checkers may be folders holding a `config.json`.

One rule decides both what is listed and what loads (`names` and `path` share it): symlinks the user
placed are followed, wherever they point, as ComfyUI follows them. What is checked is the *name* a
workflow asks for: absolute names, NUL bytes and `..` parts are refused before any file is touched.
"""
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

# ComfyUI's supported_pt_extensions; sld_core loads .safetensors, .sft and weights-only .ckpt/.pt/.pth.
WEIGHT_EXTENSIONS = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")

# kind -> the sub-folders of a `models/` folder that hold it, as in ComfyUI's layout.
KIND_FOLDERS = {
    "checkpoints": ("checkpoints",),
    "diffusers": ("diffusers",),
    "safety_checker": ("safety_checker",),
    "loras": ("loras",),
    "vae": ("vae",),
}
# A model that is a folder, listed by its folder name: the file marking it, per kind.
FOLDER_MARKERS = {"checkpoints": "model_index.json", "diffusers": "model_index.json", "safety_checker": "config.json"}
# Kinds whose names also include the folder models of another kind's folders (diffusers folders are
# checkpoints for the loader, wherever ComfyUI users keep them).
ALSO_FOLDERS_OF = {"checkpoints": ("diffusers",)}
# How a headless user points `sld` at their models (the CLI's options), for messages.
FOLDER_OPTIONS = "--models-dir DIR (a models folder: DIR/checkpoints, ...) or --comfyui-dir DIR (a ComfyUI install)"
# ComfyUI's legacy folder names (folder_paths.map_legacy), accepted in extra_model_paths.yaml.
LEGACY_KINDS = {"unet": "diffusion_models", "clip": "text_encoders"}


class ModelFolders:
    """The folders searched per kind of model, in order; lists and resolves ComfyUI-style names.

    `ModelFolders("models")` is one `models/` folder; `from_comfyui(dir)` reads a ComfyUI install.
    """

    def __init__(self, models_dir=None, roots=None):
        self.roots = {kind: list(paths) for kind, paths in (roots or {}).items()}  # kind -> [Path, ...] in order
        if models_dir is not None:
            self.add_models_dir(models_dir)

    def add_models_dir(self, models_dir, first=False):
        """Add the kind folders of a ComfyUI-style `models/` directory (after the present ones, or first)."""
        for kind, subs in KIND_FOLDERS.items():
            for sub in subs:
                self.add(kind, Path(models_dir) / sub, first=first)

    def add(self, kind, folder, first=False):
        """Add one folder for `kind`, as ComfyUI's add_model_folder_path: appended, or moved/put first."""
        kind = LEGACY_KINDS.get(kind, kind)
        paths = self.roots.setdefault(kind, [])
        folder = Path(folder)
        if folder in paths:
            if first:
                paths.remove(folder)
                paths.insert(0, folder)
        elif first:
            paths.insert(0, folder)
        else:
            paths.append(folder)

    @classmethod
    def from_comfyui(cls, comfyui_dir, models_dir=None):
        """The folders a ComfyUI install at `comfyui_dir` searches: its `models/` and its
        `extra_model_paths.yaml`; an explicit `models_dir` is searched before them."""
        from .extra_model_paths import read_extra_model_paths

        comfyui_dir = Path(comfyui_dir)
        folders = cls(comfyui_dir / "models")
        config = comfyui_dir / "extra_model_paths.yaml"
        if config.is_file():
            for kind, folder, is_default in read_extra_model_paths(config):
                folders.add(kind, folder, first=is_default)
        if models_dir is not None:  # asked for by name: before all of ComfyUI's, its defaults included
            folders.add_models_dir(models_dir, first=True)
        return folders

    def __repr__(self):
        return f"ModelFolders({ {k: [str(p) for p in v] for k, v in self.roots.items()} !r})"

    def searched(self, kind):
        """The folders `names(kind)` looks in, in order (for messages)."""
        out = list(self.roots.get(kind, []))
        for other in ALSO_FOLDERS_OF.get(kind, ()):
            out += [p for p in self.roots.get(other, []) if p not in out]
        return out

    def describe(self, kind):
        """The folders searched for `kind`, in order, those that are not there marked "(missing)"."""
        return ", ".join(f"{p}" + ("" if p.is_dir() else " (missing)") for p in self.searched(kind)) or "no folder"

    def where(self, kind):
        """`describe` and how to choose other folders with the `sld` command, for a "not found" message."""
        return f"{self.describe(kind)}; choose the folders with {FOLDER_OPTIONS}"

    def names(self, kind):
        """Sorted names of the weight files of `kind` in all its folders, plus its folder models
        (diffusers folders for checkpoints, folders holding a config.json for safety checkers)."""
        found = set()
        for _folder, listed in self._listings(kind):
            found.update(listed)
        return sorted(found)

    def path(self, kind, name):
        """The file or folder a listed `name` of `kind` refers to (in the first folder listing it), or
        None: for a name that is not listed, and for any name that is not a plain relative name."""
        if not safe_name(name):
            return None
        name = name.replace("\\", "/")
        for folder, listed in self._listings(kind):
            if name in listed:
                return folder / name
        return None

    def _listings(self, kind):
        """(folder, names found there) per searched folder, in search order."""
        marker = FOLDER_MARKERS.get(kind, "model_index.json")
        for folder in self.roots.get(kind, []):
            yield folder, set(_walk(folder, marker))
        for other in ALSO_FOLDERS_OF.get(kind, ()):
            for folder in self.roots.get(other, []):
                yield folder, set(_walk(folder, FOLDER_MARKERS[other], files=False))


def safe_name(name):
    """True for a plain relative name: not empty, no NUL, not absolute (POSIX or Windows, drive
    letters included), and no `..` part. Lexical only: where a user's symlink points is not judged."""
    if not isinstance(name, str) or not name or "\0" in name:
        return False
    if os.path.isabs(name) or PurePosixPath(name).is_absolute() or PureWindowsPath(name).drive:
        return False
    if name.startswith(("/", "\\")):  # also rooted on Windows, with or without a drive
        return False
    return ".." not in name.replace("\\", "/").split("/")


def contained(folder, name):
    """`folder/name` for a `safe_name`, else None (the name's symlinks are not resolved)."""
    return Path(folder) / name if safe_name(name) else None


def _walk(folder, marker, files=True, _prefix="", _above=frozenset()):
    """Names under `folder`, following symlinks: folder models (directories holding `marker`, not entered
    further) and, with `files`, weight files. A directory that links back to one above it is skipped, so
    a link loop ends; the same directory reached through two links is listed under both names."""
    folder = Path(folder)
    real = os.path.realpath(folder)
    if real in _above:
        return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError:  # missing, not a directory, unreadable: nothing listed, as in ComfyUI
        return
    if _prefix and any(e.name == marker for e in entries):
        yield _prefix.rstrip("/")
        return
    for entry in entries:
        if entry.is_dir():  # follows symlinks
            if entry.name == ".git":  # skipped by ComfyUI's listing too
                continue
            yield from _walk(entry.path, marker, files, f"{_prefix}{entry.name}/", _above | {real})
        elif files and entry.name.lower().endswith(WEIGHT_EXTENSIONS) and entry.is_file():
            yield _prefix + entry.name
