"""`sld eval`: the Safe Stable Diffusion model card's measurement — the probability of an
inappropriate image per category and SLD preset — on any SD1.x checkpoint, prompts in the I2P CSV
format and any safety checker of the package (or the demo model's exact pixel classifier)."""
from .prompts import EvalPrompt, read_prompts
from .report import COLUMNS, expected_max, markdown, rows, table, write_report
from .run import DEFAULT_PRESETS, EvalSettings, evaluate

__all__ = ["COLUMNS", "DEFAULT_PRESETS", "EvalPrompt", "EvalSettings", "evaluate", "expected_max", "markdown",
           "read_prompts", "rows", "table", "write_report"]
