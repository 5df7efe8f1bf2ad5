"""The web app's own files under `sld serve --frontend`: its settings and user data (saved workflows,
keybindings, ...), kept as ComfyUI keeps them in `user/default/`, here in `<output>/.sld-user/default/`.

One user, as ComfyUI without --multi-user. The folder is hidden, so /view never serves it. A relative
path from a request is checked as text (no NUL, no absolute path or drive, no '.' or '..' part) and then
resolved, symlinks followed, and must still lie inside the user folder. Files are written whole under a
temporary name and renamed into place (the name main.py's clean-up removes after a crash).
"""
import json
import os
import re
import secrets
import shutil
import threading
from pathlib import Path

FOLDER = ".sld-user"
USER = "default"
SETTINGS = "comfy.settings.json"
STANDARD_FOLDERS = ("workflows", "subgraphs")  # the web app lists them at start-up: present, not a 404
# Files the web app asks for, made once when missing: index.html links user.css, the app reads its
# saved node templates and workflow bookmarks. The two canvas settings are the ones the default navigation mode
# sets; the 1.27 app sets them before it has registered them, which throws unless they are stored.
FIRST_FILES = {
    "user.css": b"",
    "comfy.templates.json": b"[]",
    "workflows/.index.json": b'{"favorites": []}',  # the workflows panel's bookmarks
    SETTINGS: json.dumps({"Comfy.Canvas.LeftMouseClickBehavior": "panning",
                          "Comfy.Canvas.MouseWheelScroll": "zoom"}, indent=4).encode("utf-8"),
}
MAX_PATH_BYTES = 1000


class Refused(Exception):
    """A user-data request that is not allowed or cannot be served; `status` is the HTTP status."""

    def __init__(self, status, message):
        self.status, self.message = status, message
        super().__init__(message)


def _parts(relative):
    if not isinstance(relative, str) or not relative.strip("/\\"):
        raise Refused(400, "the path is empty")
    if "\0" in relative:
        raise Refused(400, "the path contains a NUL byte")
    if len(relative.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise Refused(400, f"the path is longer than {MAX_PATH_BYTES} bytes")
    if relative.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", relative) or os.path.isabs(relative):
        raise Refused(400, f"{relative!r} is absolute; user data paths are relative to the user folder")
    parts = [p for p in re.split(r"[\\/]", relative) if p]
    if any(p in (".", "..") for p in parts):
        raise Refused(400, f"{relative!r}: '.' and '..' are not allowed in user data paths")
    return parts


def _file_info(path, base):
    stat = path.stat()
    return {"path": path.relative_to(base).as_posix(), "size": stat.st_size,
            "modified": stat.st_mtime, "created": stat.st_ctime}


class UserData:
    def __init__(self, output_dir):
        self.base = Path(output_dir, FOLDER, USER).resolve()
        self._settings_lock = threading.Lock()  # settings are read, merged and written by concurrent requests
        for name in STANDARD_FOLDERS:
            (self.base / name).mkdir(parents=True, exist_ok=True)
        for name, content in FIRST_FILES.items():
            if not (self.base / name).exists():
                self._write(self.base / name, content)  # parent folders are STANDARD_FOLDERS

    def path(self, relative):
        """The resolved path of a user-data file or folder; `Refused` unless it lies inside the user folder."""
        path = self.base.joinpath(*_parts(relative)).resolve()
        if path == self.base or self.base not in path.parents:
            raise Refused(403, f"{relative!r} leads outside the user folder")
        return path

    # --- settings (ComfyUI's app_settings) ---

    def settings(self):
        try:
            value = json.loads((self.base / SETTINGS).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}  # a missing or damaged file: the web app's defaults apply
        return value if isinstance(value, dict) else {}

    def update_settings(self, values):
        """Merge `values` into the stored settings; a value of None removes the setting (the app's default applies)."""
        with self._settings_lock:
            merged = {k: v for k, v in {**self.settings(), **values}.items() if v is not None}
            self._write(self.base / SETTINGS, json.dumps(merged, indent=4).encode("utf-8"))

    # --- files (ComfyUI's user_manager) ---

    def listing(self, directory, recurse=False, full_info=False, split=False):
        """GET /userdata?dir=: the files (not folders) in a folder, as paths relative to it; hidden names
        are left out, as ComfyUI's glob leaves them (the workflows panel lists these as workflows)."""
        folder = self.path(directory)
        if not folder.is_dir():
            raise Refused(404, f"no user data folder {directory!r}")
        found = folder.rglob("*") if recurse else folder.iterdir()
        out = []
        for path in sorted(p for p in found if p.is_file() and self._inside(p)):
            relative = path.relative_to(folder).as_posix()
            if any(part.startswith(".") for part in relative.split("/")):
                continue
            out.append(_file_info(path, folder) if full_info else [relative, *relative.split("/")] if split else relative)
        return out

    def listing_v2(self, relative=""):
        """GET /v2/userdata?path=: folders then files under a folder, paths relative to the user folder."""
        folder = self.path(relative) if relative.strip("/\\") else self.base
        if not folder.exists():
            raise Refused(404, f"no user data folder {relative!r}")
        if not folder.is_dir():
            raise Refused(400, f"{relative!r} is not a folder")
        out = []
        for path in folder.rglob("*"):
            if not self._inside(path):
                continue
            entry = {"name": path.name, "path": path.relative_to(self.base).as_posix(),
                     "type": "directory" if path.is_dir() else "file"}
            if path.is_file():
                stat = path.stat()
                entry.update(size=stat.st_size, modified=stat.st_mtime)
            out.append(entry)
        return sorted(out, key=lambda e: (e["type"] != "directory", e["name"].lower()))

    def read(self, relative):
        path = self.path(relative)
        if not path.is_file():
            raise Refused(404, f"no user data file {relative!r}")
        return path

    def write(self, relative, data, overwrite=True):
        path = self.path(relative)
        if path.is_dir():
            raise Refused(400, f"{relative!r} is a folder")
        if not overwrite and path.exists():
            raise Refused(409, f"{relative!r} already exists")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path(relative)  # again: a folder just made must not have become a way out
        self._write(path, data)
        return path

    def delete(self, relative):
        self.read(relative).unlink()

    def move(self, source, dest, overwrite=True):
        source_path, dest_path = self.read(source), self.path(dest)
        if not overwrite and dest_path.exists():
            raise Refused(409, f"{dest!r} already exists")
        dest_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source_path, dest_path)
        return dest_path

    def info(self, path, full):
        """The answer to a write or move: ComfyUI's file info, or the path relative to the user folder."""
        return _file_info(path, self.base) if full else path.relative_to(self.base).as_posix()

    def _inside(self, path):
        resolved = path.resolve()
        return resolved != self.base and self.base in resolved.parents  # a symlink out is not listed

    @staticmethod
    def _write(path, data):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            with open(tmp, "xb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
