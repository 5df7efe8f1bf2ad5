"""Typed, user-facing errors of sld_core.

Raised where the fact is known, formatted once at the edge (CLI or node). Every message is a complete
sentence a user can act on; none of these should ever surface with a traceback.
"""


class SLDError(Exception):
    """Base class: a mistake in what the user asked for or gave us, not a bug."""


class InvalidInputError(SLDError, ValueError):
    """A value handed to sld_core is out of its domain (unknown sampler, wrong latent shape, ...)."""


class CheckpointError(SLDError):
    """A model file or folder cannot be used: missing, corrupt, unsafe or of an unsupported family."""

    def __init__(self, path, reason):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class UnsupportedModelError(CheckpointError):
    """The checkpoint is readable but of a family we do not load (SD3, Flux, ...), named in `family`."""

    def __init__(self, path, family, reason=None):
        self.family = family
        super().__init__(path, reason or f"{family} checkpoints are not supported (SD1.x, SD2.x and SDXL are)")


class SafetyCheckerError(SLDError):
    """A safety checker cannot load or run: the images must not pass on unchecked (fail closed)."""

    def __init__(self, checker, reason):
        self.checker = str(checker)
        self.reason = " ".join(str(reason).split())  # one line, whatever the cause printed
        super().__init__(f"safety checker {self.checker!r} cannot run: {self.reason}")
