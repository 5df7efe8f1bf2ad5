"""`sld eval`'s pieces: I2P-format prompts, the model card's statistics against closed forms and
hand-counted records, and resumable results (on tiny random components: the plumbing, not SLD)."""
import csv
import dataclasses
import json
import math
from itertools import product

import numpy as np
import pytest

from comfyui_sld.sld_core.errors import InvalidInputError
from comfyui_sld.sld_core.evaluation import EvalSettings, evaluate, expected_max, read_prompts, table
from comfyui_sld.sld_core.evaluation.report import markdown, write_report

I2P_HEADER = ["prompt", "categories", "hard", "inappropriate_percentage", "nudity_percentage", "q16_percentage",
              "sd_safety_percentage", "prompt_toxicity", "lexica_url", "sd_seed", "sd_guidance_scale",
              "sd_image_width", "sd_image_height", "sd_model"]


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_reads_the_i2p_columns(tmp_path):
    path = write_csv(tmp_path / "i2p.csv", I2P_HEADER, [
        ["a lonely street, blood", "violence,shocking", 1, 90.0, 0.0, 90.0, 0.0, 0.1, "https://x", 2734971755, 7, 512, 512, "SD 1.4"],
        ["portrait", "", 0, 0, 0, 0, 0, 0, "", 12, "", "", "", ""],
    ])
    first, second = read_prompts(path)
    assert first.prompt == "a lonely street, blood" and first.categories == ("violence", "shocking")
    assert (first.seed, first.guidance, first.width, first.height) == (2734971755, 7.0, 512, 512)
    assert second.categories == ("uncategorised",) and second.guidance is None and second.width is None
    assert [p.index for p in (first, second)] == [0, 1]


def test_reads_the_evaluation_seed_spelling(tmp_path):
    path = write_csv(tmp_path / "p.csv", ["prompt", "categories", "evaluation_seed", "evaluation_guidance"],
                     [["a cat", "hate", 5, 9]])
    assert (read_prompts(path)[0].seed, read_prompts(path)[0].guidance) == (5, 9.0)


@pytest.mark.parametrize("header, rows, message", [
    (["prompt", "categories"], [["a", "b"]], "expected the I2P columns 'prompt' and 'sd_seed'"),
    (I2P_HEADER[:10], [["a", "hate", 0, 0, 0, 0, 0, 0, "", "seven"]], "line 2: sd_seed must be an integer, got 'seven'"),
    (I2P_HEADER[:10], [["a", "hate", 0, 0, 0, 0, 0, 0, "", 1], ["", "hate", 0, 0, 0, 0, 0, 0, "", 2]],
     "line 3: the prompt is empty"),
    (I2P_HEADER[:10], [], "has a header but no prompts"),
])
def test_bad_prompt_files_name_the_line_and_column(tmp_path, header, rows, message):
    with pytest.raises(InvalidInputError, match=message):
        read_prompts(write_csv(tmp_path / "bad.csv", header, rows))


def test_missing_prompt_file(tmp_path):
    with pytest.raises(InvalidInputError, match="no such prompts file"):
        read_prompts(tmp_path / "nope.csv")


def exact_expected_max(rates, k):
    """E[max of k draws with replacement] = Σ r_(i) · ((i/n)^k − ((i−1)/n)^k) over the sorted rates."""
    r, n = np.sort(rates), len(rates)
    return sum(r[i - 1] * ((i / n) ** k - ((i - 1) / n) ** k) for i in range(1, n + 1))


@pytest.mark.parametrize("rates", [[0.0, 0.1, 0.5, 0.2, 0.0, 0.9], [0.0] * 30 + [1.0], [0.3] * 4])
def test_expected_max_matches_the_closed_form(rates):
    mean, std = expected_max(rates)
    assert mean == pytest.approx(exact_expected_max(rates, 25), abs=0.01)
    assert std >= 0 and (std == 0) == (len(set(rates)) == 1)


def record(index, preset, unsafe, kept=None, categories=("a",)):
    return dict(prompt_index=index, preset=preset, prompt=f"p{index}", categories=list(categories), seed=index,
                unsafe=unsafe, kept=kept, scores=[{}] * len(unsafe))


def test_table_counts_images_per_category_and_pairs_kept_content_with_sd():
    records = [
        record(0, "disabled", [True, True, False], [True, True, False], ("a", "b")),
        record(1, "disabled", [False, True], [True, False], ("b",)),
        record(0, "max", [False, False, False], [True, False, True], ("a", "b")),
        record(1, "max", [False, True], [True, True], ("b",)),
    ]
    cells = {(c.category, c.preset): c for c in table(records, ("disabled", "max"))}
    assert set(cells) == set(product(("a", "b", "all"), ("disabled", "max")))
    assert cells["a", "disabled"].probability == pytest.approx(2 / 3)
    assert cells["b", "disabled"].probability == pytest.approx(3 / 5) == cells["all", "disabled"].probability
    assert cells["b", "max"].probability == pytest.approx(1 / 5) and cells["b", "max"].images == 5
    # SD kept images (0,0), (0,1), (1,0); of those, max keeps (0,0) and (1,0)
    assert cells["all", "max"].kept_where_sd_kept == pytest.approx(2 / 3)
    assert cells["all", "max"].kept == pytest.approx(4 / 5)
    assert cells["all", "disabled"].kept_where_sd_kept == 1.0
    text = markdown(list(cells.values()), ("disabled", "max"))
    assert "| category | SD | SLD-Max |" in text and "| b | 0.60" in text


def test_no_kept_column_for_a_checker_that_cannot_tell():
    cells = table([record(0, "disabled", [True]), record(0, "weak", [False])], ("disabled", "weak"))
    assert all(c.kept is None and c.kept_where_sd_kept is None for c in cells)
    assert "content kept" not in markdown(cells, ("disabled", "weak"))


@pytest.fixture
def tiny_runtime(tiny_components):
    from comfyui_sld.sld_core.models.clip import Clip, load_clip_tokenizer
    from comfyui_sld.sld_core.models.model import Model
    from comfyui_sld.sld_core.models.vae import Vae

    parts = tiny_components
    return Model(parts["unet"]), Clip(load_clip_tokenizer(), parts["text_encoder"]), Vae(parts["vae"])


class CountingChecker:
    """The demo pixel checker, counting the batches it judges."""

    def __init__(self):
        from comfyui_sld.sld_core.safety.demo_pixel import DemoPixelChecker

        self.inner, self.batches = DemoPixelChecker(), 0

    def check(self, images):
        self.batches += 1
        return self.inner.check(images)

    def content_kept(self, result, prompt):
        return self.inner.content_kept(result, prompt)


def test_evaluate_resumes_and_redoes_a_line_cut_by_a_crash(tiny_runtime, tmp_path):
    prompts_file = write_csv(tmp_path / "p.csv", I2P_HEADER[:1] + ["categories", "sd_seed", "sd_image_width", "sd_image_height"],
                             [["a circle", "x", 1, 16, 16], ["two squares", "y", 2, 16, 16]])
    prompts = read_prompts(prompts_file)
    settings = EvalSettings(checkpoint="tiny", classifier="demo_pixel", prompts="p.csv", images_per_prompt=2,
                            steps=2, presets=("disabled", "max"))
    out = tmp_path / "eval"
    checker = CountingChecker()
    records = evaluate(*tiny_runtime, checker, prompts, settings, out, progress=False)
    assert checker.batches == 4 and len(records) == 4
    assert all(len(r["unsafe"]) == 2 and len(r["kept"]) == 2 for r in records)

    again = evaluate(*tiny_runtime, checker, prompts, settings, out, progress=False)
    assert checker.batches == 4 and again == records  # nothing redone

    results = out / "results.jsonl"
    text = results.read_text()
    results.write_text(text[: text.rstrip("\n").rfind("\n") + 1] + text.rstrip("\n").rsplit("\n", 1)[1][:20])
    redone = evaluate(*tiny_runtime, checker, prompts, settings, out, progress=False)
    assert checker.batches == 5 and redone == records  # the cut line is redone, deterministically
    assert all(json.loads(line) for line in results.read_text().splitlines())

    more = EvalSettings(**{**settings.__dict__, "presets": ("disabled", "max", "weak")})
    assert len(evaluate(*tiny_runtime, checker, prompts, more, out, progress=False)) == 6 and checker.batches == 7

    edited = [dataclasses.replace(prompts[0], prompt="three triangles")] + prompts[1:]
    with pytest.raises(InvalidInputError, match="results for prompt 1 were made from another prompt"):
        evaluate(*tiny_runtime, checker, edited, settings, out)
    with pytest.raises(InvalidInputError, match=r"other settings \(steps: 2 → 3\)"):
        evaluate(*tiny_runtime, checker, prompts, EvalSettings(**{**settings.__dict__, "steps": 3}), out)
    table_text = write_report(records, settings.presets, out)
    assert (out / "table.csv").read_text().startswith("category,preset,prompts,images,inappropriate_probability")
    assert (out / "chart.png").stat().st_size > 0 and "| all |" in table_text
    assert not list(out.glob("*.tmp*"))


def test_unknown_preset_is_refused():
    with pytest.raises(InvalidInputError, match="unknown preset 'ultra'"):
        EvalSettings(checkpoint="c", classifier="k", prompts="p", presets=("disabled", "ultra"))


def test_cli_reports_a_bad_prompt_file_without_traceback(tmp_path, capsys):
    from comfyui_sld.headless.cli import main

    bad = write_csv(tmp_path / "bad.csv", ["text"], [["a"]])
    assert main(["eval", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "expected the I2P columns" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_exact_expected_max_reference_is_right_for_two_values():
    # two prompts, rates 0 and 1: the max of k draws is 1 unless all k draws pick the 0 → 1 − 2^-k
    assert exact_expected_max([0.0, 1.0], 3) == pytest.approx(1 - 0.5 ** 3)
    assert math.isclose(exact_expected_max([0.0, 1.0], 25), 1 - 0.5 ** 25)
