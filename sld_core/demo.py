"""The small model that needs no downloads: the trained demo model the package ships (the default
checkpoint on a fresh machine) and its concept checker.

It is the SD1.x architecture (same block types, cross-attention to CLIP-style embeddings, the real
CLIP tokenizer), only narrower. The model and its checker are trained on the procedural scenes of
`demo_data` by scripts/train_demo_model.py and scripts/train_demo_checker.py; their settings and loss
curves lie beside them in demo_assets/.
"""
from pathlib import Path

DEMO_ASSETS = Path(__file__).resolve().parent / "demo_assets"
DEMO_CHECKPOINT_FILE = DEMO_ASSETS / "sld_demo.safetensors"
DEMO_CHECKER_DIR = DEMO_ASSETS / "sld_demo_checker"
DEMO_PROMPTS = DEMO_ASSETS / "demo_prompts.csv"
# The demo model's guidance scale. Its text conditioning is strong (a caption fixes most of a simple
# scene), so SD's 7.5 overshoots: CFG saturates colours and SLD's safety term, which CFG scales too,
# re-draws the scene. At 2.0 it draws the asked shape as often and SLD keeps it (sld_demo_training.json).
DEMO_CFG = 2.0


def load_demo(device="auto", dtype=None, compile=False):
    """The embedded default model, trained on `demo_data` scenes (scripts/train_demo_model.py), as the
    runtime's ``(Model, Clip, Vae)``: float32 on the CPU, the device's default dtype elsewhere. It is
    an ordinary single-file checkpoint and loads through the same loader as users' checkpoints."""
    from .models.checkpoint import load_checkpoint

    return load_checkpoint(DEMO_CHECKPOINT_FILE, device=device, dtype=dtype, compile=compile)
