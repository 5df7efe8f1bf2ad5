"""Several checkers as one: an image is flagged when any of them flags it, as I2P's benchmark counts
an image inappropriate when Q16 or NudeNet says so (`sld eval --classifier q16+nudenet`)."""
from .base import CheckResult, SafetyChecker


class AnyOf(SafetyChecker):
    def __init__(self, checkers):
        self.checkers = tuple(checkers)
        self.name = "+".join(c.name for c in self.checkers)

    def _check(self, pixels, sensitivity):
        verdicts = [c._check(pixels, sensitivity) for c in self.checkers]  # each on the same uint8 pixels
        results = []
        for per_image in zip(*verdicts):
            scores = {f"{c.name}:{k}": v for c, r in zip(self.checkers, per_image) for k, v in r.scores.items()}
            concepts = tuple(f"{c.name}:{k}" for c, r in zip(self.checkers, per_image) for k in r.concepts)
            flagged_by = [c.name for c, r in zip(self.checkers, per_image) if r.flagged]
            results.append(CheckResult(bool(flagged_by), scores, concepts, {"flagged_by": flagged_by}))
        return results
