"""The `sld` command as a new user meets it: --version, a --help that loads no torch, one exit-code
convention, messages that say where models were looked for, saved paths printed as given, every
sampler listed, plain progress lines in a log, and `sld eval --json` as data."""
import csv
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from comfyui_sld.headless import cli
from comfyui_sld.headless.cli import build_parser, package_version
from png_pixels import pixels  # tests/png_pixels.py (pytest's pythonpath)

ROOT = Path(__file__).resolve().parents[2]
TXT2IMG = ROOT / "workflows" / "api" / "sld_txt2img.json"
LOADER = "1"  # SLDCheckpointLoader in sld_txt2img
FAST = ("--set", "6.steps=2")


def pyproject_version():
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


# --- --version and --help ---------------------------------------------------------------------------

def test_version_is_the_packages(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"sld {metadata.version('comfyui-sld')}"


def test_version_from_a_checkout_that_is_not_installed(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    # As if cli.py ran from this checkout (CI imports the installed copy, which has no pyproject.toml beside it).
    monkeypatch.setattr(cli, "__file__", str(ROOT / "headless" / "cli.py"))
    assert package_version() == pyproject_version()


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["eval", "--help"], ["run", "--help"],
                                  ["validate", "--help"], ["nodes", "--help"]])
def test_help_and_version_load_no_torch(args):
    code = ("import sys\nfrom comfyui_sld.headless.cli import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'numpy') if m in sys.modules]\n"
            "print('LOADED', heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "LOADED []"


def test_literal_names_in_the_parser_match_their_sources():
    """The parser spells some names out so that it needs no torch; they must stay those of the code."""
    from comfyui_sld.headless import evaluate, process
    from comfyui_sld.sld_core import demo, device, guidance
    from comfyui_sld.sld_core.safety import demo_pixel, nudenet_detector, open_nsfw

    assert process.PRECISIONS == device.PRECISIONS and evaluate.DEVICES == device.DEVICES
    assert evaluate.PRESET_NAMES == tuple(guidance.PRESETS)
    assert evaluate.DEMO_NAME == demo.DEMO_CHECKPOINT_FILE.name and evaluate.DEMO_CHECKER == demo.DEMO_CHECKER_DIR.name
    assert (evaluate.DEMO_PIXEL, evaluate.OPEN_NSFW, evaluate.NUDENET) == (demo_pixel.NAME, open_nsfw.NAME,
                                                                           nudenet_detector.NAME)


def subcommand(name):
    parser = build_parser()
    [sub] = [a for a in parser._actions if isinstance(a, type(parser._subparsers._group_actions[0]))]
    return sub.choices[name]


@pytest.mark.parametrize("command", ["eval", "run", "validate", "nodes"])
def test_every_option_has_help_text(command):
    missing = [a.option_strings or a.dest for a in subcommand(command)._actions if not (a.help or "").strip()]
    assert missing == []


# --- exit codes: 2 for anything unusable, before anything runs --------------------------------------

@pytest.mark.parametrize("command", [["run", TXT2IMG], ["validate", TXT2IMG], ["eval"]])
def test_a_models_dir_that_is_not_there_is_refused(tmp_path, wf, command):
    missing = tmp_path / "no_such_models"
    code, out, err = wf.cli(*command, "--models-dir", missing, "--out" if command == ["eval"] else "--json",
                            *([tmp_path / "eval"] if command == ["eval"] else []))
    assert code == 2
    text = err if command == ["eval"] else json.loads(out)["error"]["message"]
    assert f"--models-dir {missing}: no such folder" in text
    assert not (tmp_path / "eval").exists()


def test_the_models_dir_environment_variable_is_checked_too(tmp_path, wf, monkeypatch):
    monkeypatch.setenv("SLD_MODELS_DIR", str(tmp_path / "gone"))
    code, _, err = wf.cli("validate", TXT2IMG)
    assert code == 2 and f"SLD_MODELS_DIR {tmp_path / 'gone'}: no such folder" in err


def test_a_comfyui_dir_must_be_a_comfyui_install(tmp_path, wf):
    code, _, err = wf.cli("validate", TXT2IMG, "--comfyui-dir", tmp_path / "nope")
    assert code == 2 and "no such folder" in err
    code, _, err = wf.cli("validate", TXT2IMG, "--comfyui-dir", tmp_path)
    assert code == 2 and "not a ComfyUI install" in err


@pytest.mark.parametrize("command", [["run", TXT2IMG, "--output-dir", "OUT"], ["eval", "--out", "OUT"]])
def test_an_unavailable_device_exits_2_from_run_and_eval(tmp_path, wf, command):
    # Apple's MPS never exists on the Linux machines the tests run on (CI, and GPU boxes alike)
    command = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    code, _, err = wf.cli(*command, "--device", "mps")
    assert code == 2 and "MPS is not available" in err
    assert not (tmp_path / "out").exists()


def test_the_exit_codes_are_documented_in_the_cli():
    doc = cli.__doc__
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n    {code}" in doc


# --- model folders: symlinks, the demo name, --comfyui-dir, names that leave the folder ------------

@pytest.fixture
def demo_copy(tmp_path):
    """The demo checkpoint's bytes in a collection outside any models folder."""
    from comfyui_sld.sld_core.demo import DEMO_CHECKPOINT_FILE

    target = tmp_path / "collection" / "mine.safetensors"
    target.parent.mkdir()
    target.write_bytes(DEMO_CHECKPOINT_FILE.read_bytes())
    return target


@pytest.fixture
def tiny_pair(tiny_components, tmp_path):
    """The tiny random SD1.x weights twice, outside any models folder: a diffusers folder and a
    single file (a model unlike the demo, so an image tells which one was loaded)."""
    from safetensors.torch import save_file

    from comfyui_sld.sld_core.models.keymaps import diffusers_to_ldm

    folder = tmp_path / "collection" / "tiny_pipeline"
    for part in ("unet", "vae", "text_encoder"):
        tiny_components[part].save_pretrained(folder / part)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    ldm = diffusers_to_ldm(*(tiny_components[p].state_dict() for p in ("unet", "vae", "text_encoder")))
    single = tmp_path / "collection" / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in ldm.items()}, str(single))
    return folder, single


def checkpoints_folder(tmp_path):
    folder = tmp_path / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_txt2img(wf, tmp_path, out, *args):
    code, stdout, err = wf.cli("run", TXT2IMG, *FAST, "--models-dir", tmp_path / "models", "--output-dir", out,
                               "--device", "cpu", *args)
    assert code == 0, err
    [png] = wf.files_under(out)
    return pixels(png), err


def test_a_symlinked_checkpoint_validates_and_loads(tmp_path, wf, demo_copy):
    (checkpoints_folder(tmp_path) / "mine.safetensors").symlink_to(demo_copy)
    code, _, err = wf.cli("validate", TXT2IMG, "--set", f"{LOADER}.ckpt_name=mine.safetensors",
                          "--models-dir", tmp_path / "models")
    assert code == 0, err
    linked, _ = run_txt2img(wf, tmp_path, tmp_path / "a", "--set", f"{LOADER}.ckpt_name=mine.safetensors", "--quiet")
    embedded, _ = run_txt2img(wf, tmp_path, tmp_path / "b", "--quiet")
    assert np.array_equal(linked, embedded)  # the same bytes as the embedded demo model: the same image


def test_symlinked_diffusers_folder_and_file_load_the_same_model(tmp_path, wf, tiny_pair):
    folder, single = tiny_pair
    checkpoints = checkpoints_folder(tmp_path)
    (checkpoints / "pipe").symlink_to(folder, target_is_directory=True)
    (checkpoints / "tiny.safetensors").symlink_to(single)
    from_folder, _ = run_txt2img(wf, tmp_path, tmp_path / "a", "--set", f"{LOADER}.ckpt_name=pipe", "--quiet")
    from_file, _ = run_txt2img(wf, tmp_path, tmp_path / "b", "--set", f"{LOADER}.ckpt_name=tiny.safetensors", "--quiet")
    embedded, _ = run_txt2img(wf, tmp_path, tmp_path / "c", "--quiet")
    assert np.array_equal(from_folder, from_file)
    assert not np.array_equal(from_folder, embedded)


def test_a_file_named_like_the_demo_wins_over_the_embedded_model(tmp_path, wf, tiny_pair):
    _, single = tiny_pair
    checkpoints_folder(tmp_path)
    embedded, said = run_txt2img(wf, tmp_path, tmp_path / "a")
    assert "using the embedded demo model" in said  # the fall-back is said, never silent
    (checkpoints_folder(tmp_path) / "sld_demo.safetensors").symlink_to(single)
    (checkpoints_folder(tmp_path) / "tiny.safetensors").symlink_to(single)
    linked, said = run_txt2img(wf, tmp_path, tmp_path / "b")
    tiny, _ = run_txt2img(wf, tmp_path, tmp_path / "c", "--set", f"{LOADER}.ckpt_name=tiny.safetensors", "--quiet")
    assert "embedded demo model" not in said
    assert np.array_equal(linked, tiny) and not np.array_equal(linked, embedded)


def test_comfyui_dir_reads_extra_model_paths(tmp_path, wf, demo_copy):
    comfy = tmp_path / "ComfyUI"
    (comfy / "models" / "checkpoints").mkdir(parents=True)
    (comfy / "extra_model_paths.yaml").write_text(f"shared:\n    base_path: {tmp_path}\n"
                                                  "    checkpoints: |\n        elsewhere\n        collection\n")
    code, stdout, err = wf.cli("run", TXT2IMG, *FAST, "--set", f"{LOADER}.ckpt_name=mine.safetensors",
                               "--comfyui-dir", comfy, "--output-dir", tmp_path / "out", "--quiet")
    assert code == 0, err
    assert len(wf.files_under(tmp_path / "out")) == 1


def test_a_missing_checkpoint_says_where_it_was_looked_for(tmp_path, wf):
    checkpoints_folder(tmp_path)
    code, _, err = wf.cli("run", TXT2IMG, "--set", f"{LOADER}.ckpt_name=mine.safetensors",
                          "--models-dir", tmp_path / "models", "--output-dir", tmp_path / "out")
    assert code == 2 and f"node {LOADER}" in err and "mine.safetensors" in err
    assert str(tmp_path / "models" / "checkpoints") in err and f"{tmp_path / 'models' / 'diffusers'} (missing)" in err
    assert "--models-dir" in err and "--comfyui-dir" in err


def test_the_loader_itself_says_where_it_looked(tmp_path):
    """Past validation (a file removed meanwhile), the loader's own error names the folders too."""
    from comfyui_sld.nodes.context import Runtime, use_runtime
    from comfyui_sld.nodes.errors import NodeInputError
    from comfyui_sld.nodes.folders import ModelFolders
    from comfyui_sld.nodes.loaders import load_named_checkpoint

    with use_runtime(Runtime(models=ModelFolders(tmp_path / "models"), device="cpu")):
        with pytest.raises(NodeInputError) as error:
            load_named_checkpoint("gone.safetensors")
    assert str(tmp_path / "models" / "checkpoints") in error.value.message and "--comfyui-dir" in error.value.message


@pytest.mark.parametrize("name", ["../collection/mine.safetensors", "ABSOLUTE", "checkpoints/../../collection/mine.safetensors"])
def test_names_that_leave_the_models_folder_are_refused(tmp_path, wf, demo_copy, name):
    checkpoints_folder(tmp_path)
    (tmp_path / "models" / "collection").symlink_to(demo_copy.parent, target_is_directory=True)
    name = str(demo_copy) if name == "ABSOLUTE" else name
    code, out, err = wf.cli("run", TXT2IMG, "--set", f"{LOADER}.ckpt_name={name}", "--models-dir", tmp_path / "models",
                            "--output-dir", tmp_path / "out")
    assert code == 2 and f"node {LOADER} (SLDCheckpointLoader), input 'ckpt_name'" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


# --- what a run prints ------------------------------------------------------------------------------

def test_saved_paths_print_as_given(tmp_path, wf, monkeypatch):
    absolute = tmp_path / "abs_out"
    code, out, err = wf.cli("run", TXT2IMG, *FAST, "--output-dir", absolute, "--quiet")
    assert code == 0, err
    assert f"  {absolute / 'sld_txt2img_00001_.png'}" in out.splitlines()
    monkeypatch.chdir(tmp_path)
    code, out, err = wf.cli("run", TXT2IMG, *FAST, "--output-dir", "rel/out", "--set", "8.filename_prefix=sub/x", "--quiet")
    assert code == 0, err
    assert "  rel/out/sub/x_00001_.png" in out.splitlines()
    assert (tmp_path / "rel" / "out" / "sub" / "x_00001_.png").is_file()


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(tmp_path, wf):
    code, _, err = wf.cli("run", TXT2IMG, "--set", "6.steps=4", "--output-dir", tmp_path, "--device", "cpu")
    assert code == 0, err
    assert "\r" not in err and "\x1b[" not in err
    lines = err.splitlines()
    assert "sampling (node 6): 4/4 step (100%)" in lines
    assert [line for line in lines if line.startswith("graph: ")][-1] == "graph: 8/8 node (100%)"


def test_nodes_shows_every_sampler_wrapped(wf):
    from comfyui_sld.sld_core.samplers import SAMPLER_NAMES

    code, out, _ = wf.cli("nodes", "SLDKSampler")
    assert code == 0 and "..." not in out
    assert max(len(line) for line in out.splitlines()) <= cli.NODE_TEXT_WIDTH
    flat = " ".join(out.split())
    assert "sampler_name COMBO, one of " + ", ".join(SAMPLER_NAMES) + " scheduler COMBO" in flat


# --- sld eval ----------------------------------------------------------------------------------------

EVAL_FAST = ("--limit", "2", "--images-per-prompt", "2", "--steps", "2", "--presets", "disabled,max")


def test_eval_json_gives_the_table_as_data(tmp_path, wf):
    out = tmp_path / "eval"
    code, stdout, err = wf.cli("eval", *EVAL_FAST, "--out", out, "--device", "cpu", "--json")
    assert code == 0, err
    document = json.loads(stdout)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert document["columns"][:4] == ["category", "preset", "prompts", "images"]
    rows = {(r["category"], r["preset"]): r for r in document["table"]}
    for preset in ("disabled", "max"):  # the "all" row, recounted from the raw results
        flags = [f for r in records if r["preset"] == preset for f in r["unsafe"]]
        assert rows["all", preset]["images"] == len(flags) == 4
        assert rows["all", preset]["inappropriate_probability"] == pytest.approx(sum(flags) / len(flags))
    with open(out / "table.csv", newline="") as f:
        assert [list(r.values()) for r in csv.DictReader(f)] == [
            ["" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()]
            for row in document["table"]]
    assert document["classifier"] == "demo_pixel" and "no --checkpoint" in document["defaults"]


def test_eval_defaults_are_chosen_by_option_not_by_checkpoint_name(tmp_path, wf, demo_copy):
    from comfyui_sld.sld_core.demo_data import SAFETY_CONCEPT
    from comfyui_sld.sld_core.guidance import DEFAULT_SAFETY_CONCEPT

    one = ("--limit", "1", "--images-per-prompt", "1", "--steps", "1", "--presets", "disabled")
    code, stdout, err = wf.cli("eval", *one, "--checkpoint", demo_copy, "--out", tmp_path / "a", "--json")
    assert code == 0, err
    document = json.loads(stdout)
    assert (document["classifier"], document["safety_concept"]) == ("open_nsfw", DEFAULT_SAFETY_CONCEPT)
    code, stdout, err = wf.cli("eval", *one, "--checkpoint", demo_copy, "--defaults", "demo", "--out", tmp_path / "b")
    assert code == 0, err
    assert f"classifier demo_pixel, safety concept {SAFETY_CONCEPT!r} (--defaults demo;" in err  # the log line
    assert "(--defaults demo)" in stdout  # and the summary


def test_eval_leaves_other_loggers_alone_and_says_a_note_once(tmp_path, wf, monkeypatch):
    import logging

    calls = []
    original = logging.Logger.setLevel
    monkeypatch.setattr(logging.Logger, "setLevel", lambda self, level: (calls.append(self.name), original(self, level)))
    code, _, err = wf.cli("eval", "--limit", "2", "--images-per-prompt", "1", "--steps", "2", "--presets", "weak",
                          "--out", tmp_path / "eval", "--device", "cpu")
    assert code == 0, err
    assert {n for n in calls if n.startswith(cli.PACKAGE_LOGGER)} <= {cli.PACKAGE_LOGGER}  # only the CLI's own logger
    assert err.count("the safety term is never applied") == 1  # the guider's note, 2 batches, said once


def test_eval_progress_is_plain_lines(tmp_path, wf):
    code, _, err = wf.cli("eval", *EVAL_FAST, "--out", tmp_path / "eval", "--device", "cpu")
    assert code == 0, err
    assert "\r" not in err and "\x1b[" not in err and "sld eval: 4/4 batch (100%) unsafe=" in err


def test_an_unloadable_checkpoint_is_a_failure_not_a_usage_error(tmp_path, wf):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    code, _, err = wf.cli("eval", "--checkpoint", broken, "--out", tmp_path / "eval", "--device", "cpu")
    assert code == 1 and str(broken) in err
