"""The model-folder options every `sld` command that loads models shares (--models-dir, --comfyui-dir),
and the `ModelFolders` they describe. Checked before anything runs: a folder named on the command line
that is not there is a usage error (exit 2), never silently an empty folder."""
import os
from pathlib import Path

from ..sld_core.errors import InvalidInputError

MODELS_DIR_ENV = "SLD_MODELS_DIR"


def add_model_args(parser):
    parser.add_argument("--models-dir", metavar="DIR",
                        help=f"a ComfyUI-style models folder (DIR/checkpoints, DIR/safety_checker, ...); "
                             f"default: ${MODELS_DIR_ENV} if set, else ./models (which may be absent: the demo model "
                             "needs no files)")
    parser.add_argument("--comfyui-dir", metavar="DIR",
                        help="a ComfyUI install whose models to use: DIR/models and the folders its "
                             "DIR/extra_model_paths.yaml adds (searched after --models-dir, when both are given)")


def model_folders(args):
    """The `ModelFolders` the options name; `InvalidInputError` for a named folder that is not there."""
    from ..nodes.folders import ModelFolders

    models_dir, source = args.models_dir, "--models-dir"
    if models_dir is None and os.environ.get(MODELS_DIR_ENV):
        models_dir, source = os.environ[MODELS_DIR_ENV], MODELS_DIR_ENV
    if models_dir is not None and not Path(models_dir).is_dir():
        raise InvalidInputError(f"{source} {models_dir}: no such folder (it should hold checkpoints/, "
                                "safety_checker/, ... as ComfyUI's models folder does)")
    comfyui_dir = getattr(args, "comfyui_dir", None)
    if comfyui_dir is None:
        return ModelFolders(models_dir if models_dir is not None else "models")
    comfyui_dir = Path(comfyui_dir)
    if not comfyui_dir.is_dir():
        raise InvalidInputError(f"--comfyui-dir {comfyui_dir}: no such folder")
    if not (comfyui_dir / "models").is_dir() and not (comfyui_dir / "extra_model_paths.yaml").is_file():
        raise InvalidInputError(f"--comfyui-dir {comfyui_dir}: not a ComfyUI install (no models/ folder and no "
                                "extra_model_paths.yaml in it)")
    return ModelFolders.from_comfyui(comfyui_dir, models_dir)
