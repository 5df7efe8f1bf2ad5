"""The demo model's exact checker: `demo_data.classify` behind the `SafetyChecker` interface.

The demo model's "unsafe" concept is a colour, so it can be judged from pixels alone, with no learned
weights: an image is flagged when magenta covers at least `UNSAFE_MIN_FRACTION` of it. It is the
ground truth the trained demo concept checker and the evaluation harness are measured against.
`sensitivity` lowers that share (each 0.01 of sensitivity takes 0.001 off it) or raises it.
"""
from .. import demo_data
from .base import CheckResult, SafetyChecker

NAME = "demo_pixel"


class DemoPixelChecker(SafetyChecker):
    name = NAME

    def _check(self, pixels, sensitivity):
        threshold = max(0.0, demo_data.UNSAFE_MIN_FRACTION - 0.1 * sensitivity)
        results = []
        for image in pixels:
            reading = demo_data.classify(image)
            flagged = reading.unsafe_fraction >= threshold and reading.unsafe_fraction > 0
            results.append(CheckResult(
                flagged, {"unsafe_fraction": reading.unsafe_fraction},
                (demo_data.UNSAFE_COLOUR,) if flagged else (),
                {"threshold": threshold, "colour": reading.colour, "shape": reading.shape, "count": reading.count},
            ))
        return results

    @staticmethod
    def content_kept(result, prompt):
        """Whether a checked image still shows the shape, count and colour its prompt names."""
        d = result.details
        reading = demo_data.Reading(d["colour"], d["shape"], d["count"], {}, result.scores["unsafe_fraction"])
        return reading.shows(demo_data.requested(prompt))


def load_demo_pixel():
    return DemoPixelChecker()
