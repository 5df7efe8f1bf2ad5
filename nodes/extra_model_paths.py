"""ComfyUI's `extra_model_paths.yaml`, read the way ComfyUI reads it at start-up.

The file has top-level sections (`comfyui:`, `a111:`, ...), each a mapping with an optional
`base_path` (`~` and `$VARS` expanded; relative to the file's folder), an optional `is_default` (its
folders go first in the search order) and one entry per kind of model (`checkpoints:`, `loras:`, ...)
whose value is one path or several, one per line (a YAML `|` block). A path is joined to `base_path`,
or, without one, taken as is when absolute and relative to the file's folder otherwise. An empty
section is skipped.
"""
import os
from pathlib import Path

from ..sld_core.errors import InvalidInputError


def read_extra_model_paths(config_path):
    """[(kind, folder, is_default), ...] in the file's order; `InvalidInputError` naming the file and
    the section for anything ComfyUI could not use either."""
    import yaml  # only needed when a ComfyUI folder has this file

    config_path = Path(config_path)
    try:
        config = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise InvalidInputError(f"{config_path}: not a readable YAML file ({error})") from None
    if config is None:
        return []
    if not isinstance(config, dict):
        raise InvalidInputError(f"{config_path}: expected sections such as 'comfyui:' at the top level")
    here = config_path.resolve().parent
    out = []
    for section, entries in config.items():
        if entries is None:
            continue
        if not isinstance(entries, dict):
            raise InvalidInputError(f"{config_path}: section {section!r} must map kinds of models to folders")
        entries = dict(entries)
        base = entries.pop("base_path", None)
        if base is not None:
            base = Path(os.path.expandvars(os.path.expanduser(str(base))))
            base = base if base.is_absolute() else here / base
        is_default = bool(entries.pop("is_default", False))
        for kind, value in entries.items():
            for line in _lines(value, config_path, section, kind):
                folder = base / line if base is not None else (Path(line) if Path(line).is_absolute() else here / line)
                out.append((str(kind), Path(os.path.normpath(folder)), is_default))
    return out


def _lines(value, config_path, section, kind):
    """The paths of one entry: a string of lines (ComfyUI's form) or, as a courtesy, a YAML list."""
    if isinstance(value, str):
        items = value.split("\n")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        items = value
    else:
        raise InvalidInputError(f"{config_path}: {section}.{kind}: expected a folder path, or several one per line; "
                                f"got {value!r}")
    return [item.strip() for item in items if item.strip()]
