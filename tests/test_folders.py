"""Model folders as ComfyUI users keep them: symlinks followed for listing and loading alike, names
from a workflow checked lexically, several folders per kind in ComfyUI's search order, and
`extra_model_paths.yaml` read as ComfyUI reads it."""
from pathlib import Path

import pytest

from comfyui_sld.nodes.extra_model_paths import read_extra_model_paths
from comfyui_sld.nodes.folders import ModelFolders, safe_name
from comfyui_sld.sld_core.errors import InvalidInputError


def touch(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def collection(tmp_path):
    """A shared model collection outside `models/`, linked in the way users share one between tools."""
    elsewhere = tmp_path / "collection"
    touch(elsewhere / "mine.safetensors")
    touch(elsewhere / "sub" / "deep.ckpt")
    touch(elsewhere / "pipeline" / "model_index.json", "{}")
    touch(elsewhere / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    checkpoints = tmp_path / "models" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "mine.safetensors").symlink_to(elsewhere / "mine.safetensors")
    (checkpoints / "linked").symlink_to(elsewhere / "sub", target_is_directory=True)
    (checkpoints / "pipe").symlink_to(elsewhere / "pipeline", target_is_directory=True)
    (checkpoints / "dangling.safetensors").symlink_to(tmp_path / "nowhere.safetensors")
    (checkpoints / "loop").symlink_to(tmp_path / "models", target_is_directory=True)  # a link back up
    touch(checkpoints / "plain.safetensors")
    touch(checkpoints / "notes.txt")
    touch(checkpoints / ".git" / "lfs" / "objects" / "blob.safetensors")  # a model repository's own files
    return tmp_path


def test_symlinked_files_and_folders_are_listed(collection):
    folders = ModelFolders(collection / "models")
    # the loop ends (models/checkpoints is not listed again under loop/), a dangling link is no model,
    # a diffusers folder is one name and its weights are not listed one by one
    assert folders.names("checkpoints") == ["linked/deep.ckpt", "mine.safetensors", "pipe", "plain.safetensors"]


def test_every_listed_name_resolves_to_what_it_names(collection):
    folders = ModelFolders(collection / "models")
    checkpoints = collection / "models" / "checkpoints"
    for name in folders.names("checkpoints"):
        path = folders.path("checkpoints", name)
        assert path == checkpoints / name and path.exists()  # the user's link, not its target
    assert folders.path("checkpoints", "mine.safetensors").resolve() == collection / "collection" / "mine.safetensors"
    assert folders.path("checkpoints", "dangling.safetensors") is None
    assert folders.path("checkpoints", "notes.txt") is None
    assert folders.path("checkpoints", "pipe/unet/diffusion_pytorch_model.safetensors") is None  # inside a model


@pytest.mark.parametrize("name", ["../collection/mine.safetensors", "linked/../../collection/mine.safetensors",
                                  "..\\collection\\mine.safetensors", "/etc/passwd", "\\\\server\\share\\x.ckpt",
                                  "C:x.safetensors", "C:\\models\\x.safetensors", "mine.safetensors\0", "", None, 3])
def test_names_that_leave_the_folder_are_refused(collection, name):
    assert not safe_name(name)
    assert ModelFolders(collection / "models").path("checkpoints", name) is None


def test_an_absolute_name_of_a_real_file_is_refused(collection):
    target = collection / "collection" / "mine.safetensors"
    assert ModelFolders(collection / "models").path("checkpoints", str(target)) is None


def test_plain_names_are_safe():
    assert all(safe_name(n) for n in ["a.safetensors", "sd15/a.safetensors", "sd15\\a.safetensors", "..a.ckpt", "a..b"])


def test_diffusers_folders_count_as_checkpoints_from_both_folders(tmp_path):
    touch(tmp_path / "models" / "diffusers" / "sd15" / "model_index.json", "{}")
    touch(tmp_path / "models" / "checkpoints" / "x.safetensors")
    folders = ModelFolders(tmp_path / "models")
    assert folders.names("checkpoints") == ["sd15", "x.safetensors"]
    assert folders.path("checkpoints", "sd15") == tmp_path / "models" / "diffusers" / "sd15"
    assert folders.names("diffusers") == ["sd15"]


def test_first_folder_wins_and_names_are_merged(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    touch(first / "same.safetensors")
    touch(second / "same.safetensors")
    touch(second / "only_b.safetensors")
    folders = ModelFolders(roots={"checkpoints": [first, second]})
    assert folders.names("checkpoints") == ["only_b.safetensors", "same.safetensors"]
    assert folders.path("checkpoints", "same.safetensors") == first / "same.safetensors"
    assert folders.path("checkpoints", "only_b.safetensors") == second / "only_b.safetensors"


def test_add_follows_comfyuis_order_rules(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    folders = ModelFolders(roots={"loras": [a]})
    folders.add("loras", b)
    folders.add("loras", c, first=True)  # is_default: in front
    folders.add("loras", b, first=True)  # already there and default: moved to the front
    folders.add("loras", a)  # already there: stays where it is
    folders.add("unet", a)  # a legacy name
    assert folders.roots["loras"] == [b, c, a] and folders.roots["diffusion_models"] == [a]


def test_missing_message_names_every_folder_and_the_options(tmp_path):
    touch(tmp_path / "models" / "checkpoints" / "x.safetensors")
    text = ModelFolders(tmp_path / "models").where("checkpoints")
    assert str(tmp_path / "models" / "checkpoints") in text
    assert f"{tmp_path / 'models' / 'diffusers'} (missing)" in text
    assert "--models-dir" in text and "--comfyui-dir" in text


EXAMPLE = """\
# as in ComfyUI's extra_model_paths.yaml.example
a111:
    base_path: {a111}

    checkpoints: models/Stable-diffusion
    vae: models/VAE
    loras: |
         models/Lora
         models/LyCORIS

comfyui:
    base_path: shared/
    is_default: true
    checkpoints: models/checkpoints/
    unet: models/unet

nobase:
    checkpoints: |
        relative/ckpts
        {absolute}

empty:
"""


def test_extra_model_paths_are_read_as_comfyui_reads_them(tmp_path):
    config = tmp_path / "ComfyUI" / "extra_model_paths.yaml"
    touch(config, EXAMPLE.format(a111=tmp_path / "webui", absolute=tmp_path / "abs"))
    here = tmp_path / "ComfyUI"
    expected = [  # written out from the file by hand: base_path joins, else relative to the file's folder
        ("checkpoints", tmp_path / "webui" / "models" / "Stable-diffusion", False),
        ("vae", tmp_path / "webui" / "models" / "VAE", False),
        ("loras", tmp_path / "webui" / "models" / "Lora", False),
        ("loras", tmp_path / "webui" / "models" / "LyCORIS", False),
        ("checkpoints", here / "shared" / "models" / "checkpoints", True),
        ("unet", here / "shared" / "models" / "unet", True),
        ("checkpoints", here / "relative" / "ckpts", False),
        ("checkpoints", tmp_path / "abs", False),
    ]
    assert read_extra_model_paths(config) == expected


def test_base_path_expands_home_and_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELS_ROOT", str(tmp_path / "var"))
    config = touch(tmp_path / "extra_model_paths.yaml", "h:\n  base_path: ~/ui\n  checkpoints: c\n"
                                                        "v:\n  base_path: $MODELS_ROOT\n  checkpoints: c\n")
    assert [p for _, p, _ in read_extra_model_paths(config)] == [tmp_path / "home" / "ui" / "c", tmp_path / "var" / "c"]


def test_comfyui_install_search_order(tmp_path):
    comfy = tmp_path / "ComfyUI"
    touch(comfy / "models" / "checkpoints" / "both.safetensors", "from models")
    touch(tmp_path / "webui" / "models" / "Stable-diffusion" / "both.safetensors", "from webui")
    touch(tmp_path / "webui" / "models" / "Stable-diffusion" / "webui_only.safetensors")
    touch(tmp_path / "central" / "ckpt" / "both.safetensors", "from the default section")
    touch(comfy / "extra_model_paths.yaml", f"a111:\n  base_path: {tmp_path / 'webui'}\n"
                                            f"  checkpoints: models/Stable-diffusion\n"
                                            f"central:\n  base_path: {tmp_path / 'central'}\n  is_default: true\n"
                                            f"  checkpoints: ckpt\n")
    folders = ModelFolders.from_comfyui(comfy)
    assert folders.roots["checkpoints"] == [tmp_path / "central" / "ckpt", comfy / "models" / "checkpoints",
                                            tmp_path / "webui" / "models" / "Stable-diffusion"]
    assert folders.names("checkpoints") == ["both.safetensors", "webui_only.safetensors"]
    assert folders.path("checkpoints", "both.safetensors").read_text() == "from the default section"
    explicit = ModelFolders.from_comfyui(comfy, tmp_path / "mine")  # --models-dir first, then ComfyUI's own order
    assert explicit.roots["checkpoints"][0] == tmp_path / "mine" / "checkpoints"
    assert explicit.roots["checkpoints"][1:] == folders.roots["checkpoints"]


@pytest.mark.parametrize("text, message", [
    ("a: [unclosed", "not a readable YAML file"),
    ("- a\n- b\n", "expected sections"),
    ("a: just text\n", "section 'a' must map kinds of models to folders"),
    ("a:\n  checkpoints: 3\n", "a.checkpoints: expected a folder path"),
])
def test_unusable_extra_model_paths_name_the_file_and_entry(tmp_path, text, message):
    config = touch(tmp_path / "extra_model_paths.yaml", text)
    with pytest.raises(InvalidInputError, match=message) as error:
        read_extra_model_paths(config)
    assert str(config) in str(error.value)


def test_a_yaml_list_of_paths_is_accepted(tmp_path):
    config = touch(tmp_path / "extra_model_paths.yaml", "a:\n  base_path: /m\n  checkpoints:\n    - x\n    - y\n")
    assert [p for _, p, _ in read_extra_model_paths(config)] == [Path("/m/x"), Path("/m/y")]
