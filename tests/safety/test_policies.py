"""Policies: black_out zeros flagged images, blur leaves only colour blobs, flag_only changes nothing;
the input batch is never modified; the report is a list of batch length; the checker interface fails
closed on bad inputs and bad results."""
import json

import numpy as np
import pytest
import torch

from comfyui_sld.nodes.safety import SLDSafetyChecker
from comfyui_sld.sld_core.errors import InvalidInputError, SafetyCheckerError
from comfyui_sld.sld_core.safety import CheckResult, SafetyChecker, apply_action, summary


class Fixed(SafetyChecker):
    """Flags the images whose index is listed; scores are the index."""

    name = "fixed"

    def __init__(self, flagged, results=None):
        self.flagged, self.results = flagged, results

    def _check(self, pixels, sensitivity):
        if self.results is not None:
            return self.results
        return [CheckResult(i in self.flagged, {"index": float(i)}, ("x",) if i in self.flagged else ())
                for i in range(len(pixels))]


def test_actions():
    images = torch.rand(3, 32, 24, 3)
    before = images.clone()
    black = apply_action(images, [False, True, False], "black_out")
    blur = apply_action(images, [False, True, False], "blur")
    same = apply_action(images, [False, True, False], "flag_only")
    assert torch.equal(images, before) and torch.equal(same, images)
    assert not black[1].any() and torch.equal(black[[0, 2]], images[[0, 2]])
    assert torch.equal(blur[[0, 2]], images[[0, 2]]) and not torch.equal(blur[1], images[1])
    assert (blur[1, 1:] - blur[1, :-1]).abs().max() < (images[1, 1:] - images[1, :-1]).abs().max() / 2  # smooth
    with pytest.raises(InvalidInputError):
        apply_action(images, [True], "black_out")
    with pytest.raises(InvalidInputError):
        apply_action(images, [True, True, True], "delete")
    assert summary([True, False, True, False], "black_out") == "2/4 images flagged: blacked out"
    assert summary([False, False], "blur") == "0/2 images flagged"


def test_node_outputs_and_report():
    images = torch.rand(3, 16, 16, 3)
    out = SLDSafetyChecker().check(images, Fixed({2}), "black_out", 0.0)
    checked, any_flagged, text = out["result"]
    assert out["ui"]["safety_summary"] == ["1/3 images flagged: blacked out"]
    assert any_flagged is True and not checked[2].any()
    report = json.loads(text)
    assert [entry["index"] for entry in report] == [0, 1, 2]
    assert report[2] == {"index": 2, "checker": "fixed", "flagged": True, "action": "black_out",
                         "scores": {"index": 2.0}, "concepts": ["x"]}
    assert report[0]["action"] == "none" and report[0]["flagged"] is False
    _, any_flagged, text = SLDSafetyChecker().check(images[:1], Fixed(set()), "flag_only", 0.0)["result"]
    assert any_flagged is False and len(json.loads(text)) == 1


@pytest.mark.parametrize("images, results, message", [
    (torch.rand(2, 8, 8, 3), [CheckResult(False, {})], "returned 1 results for 2 images"),
    (torch.rand(1, 8, 8, 3), [CheckResult(False, {"p": float("nan")})], "non-finite score"),
    (torch.full((1, 8, 8, 3), float("nan")), None, "NaN or infinite pixels"),
    (torch.rand(8, 8, 3), None, "expected an IMAGE batch"),
])
def test_check_fails_closed(images, results, message):
    with pytest.raises(SafetyCheckerError, match=message) as error:
        Fixed(set(), results).check(images)
    assert str(error.value).startswith("safety checker 'fixed' cannot run: ")


def test_a_raising_checker_is_named():
    class Broken(SafetyChecker):
        name = "broken"

        def _check(self, pixels, sensitivity):
            raise ValueError("weights\nlost")

    with pytest.raises(SafetyCheckerError) as error:
        Broken().check(np.zeros((1, 4, 4, 3), np.float32))
    assert str(error.value) == "safety checker 'broken' cannot run: ValueError: weights lost"
