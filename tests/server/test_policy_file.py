"""`sld serve --policy FILE`: a TOML or JSON file gives the settings the flags give, flags override it
setting by setting, and every bad file is refused at start-up with one line naming the file, the key
and what was expected. (A server started from a file is test_policy.py's `guarded`.)"""
import subprocess
import sys

import pytest

from comfyui_sld.headless.cli import build_parser
from comfyui_sld.headless.cli import main as sld
from comfyui_sld.headless.server.policy import Policy, resolve_policy
from comfyui_sld.sld_core.errors import InvalidInputError

FLAGS = ["--require-sld", "strong", "--require-checker", "demo_pixel", "--action", "blur"]


def serve_args(*argv):
    return build_parser().parse_args(["serve", *argv])


def write(folder, name, text):
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("name, text", [
    ("policy.toml", '# a school\'s server\nrequire_sld = "strong"\nrequire_checker = "demo_pixel"\naction = "blur"\n'),
    ("policy.json", '{"require_sld": "strong", "require_checker": "demo_pixel", "action": "blur"}'),
])
def test_a_file_gives_the_policy_the_flags_give(tmp_path, name, text):
    from_flags, _ = resolve_policy(serve_args(*FLAGS))
    from_file, origin = resolve_policy(serve_args("--policy", str(write(tmp_path, name, text))))
    assert from_file == from_flags == Policy("strong", "demo_pixel", "blur")
    assert from_file.describe() == from_flags.describe()
    assert origin["require_checker"] == f"policy file {tmp_path / name}: require_checker"


def test_flags_override_the_file_setting_by_setting(tmp_path):
    file = write(tmp_path, "p.toml", 'require_sld = "max"\nrequire_checker = "demo_pixel"\naction = "blur"\n')
    policy, origin = resolve_policy(serve_args("--policy", str(file), "--require-sld", "weak"))
    assert policy == Policy("weak", "demo_pixel", "blur")
    assert origin == {"require_sld": "--require-sld", "require_checker": f"policy file {file}: require_checker",
                      "action": f"policy file {file}: action"}
    policy, _ = resolve_policy(serve_args("--policy", str(file), "--action", "black_out"))
    assert policy == Policy("max", "demo_pixel", "black_out")
    nulls = write(tmp_path, "p.json", '{"require_sld": null, "require_checker": "demo_pixel"}')  # null: not set
    assert resolve_policy(serve_args("--policy", str(nulls)))[0] == Policy(None, "demo_pixel", "black_out")
    assert resolve_policy(serve_args())[0] == Policy()


def test_an_action_without_a_checker_is_refused():
    with pytest.raises(InvalidInputError, match="^--action blur: the action applies only with a required checker"):
        resolve_policy(serve_args("--action", "blur"))


BAD = [  # (file name, content or None for "absent", what the message must say after "policy file PATH: ")
    ("absent.toml", None, "cannot read it: No such file or directory"),
    ("policy.yaml", "require_sld: max", "unknown format .yaml; name it .toml or .json"),
    ("policy", '{"require_sld": "max"}', "unknown format (no suffix)"),
    ("syntax.toml", "require_sld = max\n", "not valid TOML: Invalid value (at line 1, column 15)"),
    ("syntax.json", '{"require_sld": "max",}', "not valid JSON: Expecting property name enclosed in double quotes"),
    ("latin1.toml", 'require_checker = "d\xe9mo"\n'.encode("latin-1"), "not valid TOML: not UTF-8 text"),
    ("latin1.json", '{"require_checker": "d\xe9mo"}'.encode("latin-1"), "not valid JSON: 'utf-8' codec can't decode"),
    ("list.json", '["max"]', "expected a JSON object of settings (require_sld, require_checker, action), got a list"),
    ("hyphen.toml", 'require-sld = "max"\n',
     "unknown key 'require-sld' (did you mean require_sld?); expected require_sld, require_checker, action"),
    ("table.toml", '[policy]\nrequire_sld = "max"\n', "unknown key 'policy'; expected require_sld"),
    ("preset.toml", 'require_sld = "ultra"\n', "require_sld must be one of weak, medium, strong, max, got 'ultra'"),
    ("disabled.json", '{"require_sld": "disabled"}', "require_sld must be one of weak, medium, strong, max, got 'disabled'"),
    ("number.toml", "require_sld = 3\n", "require_sld must be one of weak, medium, strong, max, got a number 3"),
    ("list.toml", 'require_sld = ["max"]\n', "require_sld must be one of weak, medium, strong, max, got a list [\"max\"]"),
    ("bool.json", '{"require_checker": true}', "require_checker must be a checker name (e.g. open_nsfw), got a boolean true"),
    ("empty.toml", 'require_checker = " "\n', "require_checker must be a checker name (e.g. open_nsfw), got ' '"),
    ("date.toml", "require_checker = 2026-11-30\n", "require_checker must be a checker name (e.g. open_nsfw), got a date"),
    ("action.toml", 'require_checker = "demo_pixel"\naction = "flag_only"\n',
     "action must be one of black_out, blur, got 'flag_only'"),
    ("lonely.toml", 'action = "blur"\n', "action blur: the action applies only with a required checker"),
    ("twice.json", '{"require_sld": "max", "require_sld": "weak"}', "key 'require_sld' given twice"),
]


@pytest.mark.parametrize("name, text, expected", BAD, ids=[case[0] for case in BAD])
def test_a_bad_file_stops_the_start_with_one_line(tmp_path, capsys, name, text, expected):
    path = write(tmp_path, name, text) if text is not None else tmp_path / name
    assert sld(["serve", "--policy", str(path), "--port", "0", "--output-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: policy file {path}: {expected}"), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was prepared


def test_a_folder_is_not_a_policy_file(tmp_path, capsys):
    (tmp_path / "p.toml").mkdir()
    assert sld(["serve", "--policy", str(tmp_path / "p.toml")]) == 2
    assert capsys.readouterr().err == f"error: policy file {tmp_path / 'p.toml'}: cannot read it: Is a directory\n"


def test_a_bad_file_is_refused_before_torch_loads(tmp_path):
    file = write(tmp_path, "p.toml", 'require_sld = "ultra"\n')
    probe = (f"import sys\nfrom comfyui_sld.headless.cli import main\ncode = main(['serve', '--policy', {str(file)!r}])\n"
             "print(code, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert done.stderr.startswith(f"error: policy file {file}: require_sld must be one of"), done.stderr

