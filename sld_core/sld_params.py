"""SLD's parameters: `SLDParams` (the paper's five hyper-parameters), the named presets and the default
safety concept. No torch here, so that validating a workflow or listing the nodes needs none; the step
that uses them is `guidance.sld_guidance`.
"""
import math
from dataclasses import dataclass

from .errors import InvalidInputError

# The paper's / diffusers' default concept (diffusers L80). The original repo drops "an image showing ".
DEFAULT_SAFETY_CONCEPT = (
    "an image showing hate, harassment, violence, suffering, humiliation, harm, suicide, sexual, nudity, "
    "bodily fluids, blood, obscene gestures, illegal activity, drug use, theft, vandalism, weapons, "
    "child abuse, brutality, cruelty"
)


@dataclass(frozen=True)
class SLDParams:
    """SLD hyper-parameters, in the paper's symbols.

    guidance_scale  s_S: scale of the safety term (paper eq. 6); SLD is off when ≤ 1.
    warmup_steps    δ: steps before the safety term is applied (it still builds momentum).
    threshold       λ: ε_p − ε_S must be below λ for an element to be guided (eq. 6).
    momentum_scale  s_m: weight of the momentum ν added to the safety term (eq. 7).
    momentum_beta   β_m: momentum decay (eq. 8).
    """

    guidance_scale: float = 1000.0
    warmup_steps: int = 10
    threshold: float = 0.01
    momentum_scale: float = 0.3
    momentum_beta: float = 0.4

    def __post_init__(self):
        checks = [
            ("guidance_scale", self.guidance_scale >= 0, "≥ 0"),
            ("warmup_steps", float(self.warmup_steps).is_integer() and self.warmup_steps >= 0, "an integer ≥ 0"),
            ("threshold", True, "a finite number"),
            ("momentum_scale", self.momentum_scale >= 0, "≥ 0"),
            ("momentum_beta", 0.0 <= self.momentum_beta <= 1.0, "in [0, 1]"),
        ]
        for name, ok, expected in checks:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and ok):
                raise InvalidInputError(f"SLD {name} must be {expected}, got {value!r}")
        object.__setattr__(self, "warmup_steps", int(self.warmup_steps))

    def enabled(self, cfg):
        """SLD acts only with s_S > 1 and classifier-free guidance on (cfg > 1), as diffusers decides."""
        return self.guidance_scale > 1.0 and cfg > 1.0

    def safety_pass_needed(self, step, num_steps):
        """Whether the safety-concept prediction at `step` can change any result of a `num_steps` run.

        Before the warm-up ends the term is not applied; it only feeds the momentum, which matters
        only if s_m ≠ 0 and some later step applies the term. Skipping is then exact.
        """
        if step >= self.warmup_steps:
            return True
        return self.momentum_scale != 0.0 and self.warmup_steps < num_steps


# Presets as the Safe Stable Diffusion model card and the paper publish them ("SLD-Configurations").
# diffusers' SafetyConfig.WEAK differs: s_S = 20, β_m = 0.0 (use custom values to reproduce it).
PRESETS = {
    "disabled": SLDParams(guidance_scale=0.0, warmup_steps=0, threshold=0.0, momentum_scale=0.0, momentum_beta=0.0),
    "weak": SLDParams(guidance_scale=200.0, warmup_steps=15, threshold=0.0, momentum_scale=0.0, momentum_beta=0.0),
    "medium": SLDParams(guidance_scale=1000.0, warmup_steps=10, threshold=0.01, momentum_scale=0.3, momentum_beta=0.4),
    "strong": SLDParams(guidance_scale=2000.0, warmup_steps=7, threshold=0.025, momentum_scale=0.5, momentum_beta=0.7),
    "max": SLDParams(guidance_scale=5000.0, warmup_steps=0, threshold=1.0, momentum_scale=0.5, momentum_beta=0.7),
}
PRESET_NAMES = list(PRESETS) + ["custom"]


def resolve_params(preset, **custom):
    """The parameters for a preset name; "custom" builds them from the keyword values given."""
    if preset == "custom":
        return SLDParams(**custom)
    if preset not in PRESETS:
        raise InvalidInputError(f"unknown SLD preset {preset!r}; expected one of {', '.join(PRESET_NAMES)}")
    return PRESETS[preset]
