"""SD1.x model loading (single-file, diffusers folder, weights-only .ckpt) and the runtime wrappers."""
