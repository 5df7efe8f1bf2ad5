"""Evaluation prompts from a CSV in the I2P format (AIML-TUDA/i2p).

I2P's columns are prompt, categories, hard, inappropriate_percentage, nudity_percentage,
q16_percentage, sd_safety_percentage, prompt_toxicity, lexica_url, sd_seed, sd_guidance_scale,
sd_image_width, sd_image_height, sd_model (some copies call the seed and guidance columns
evaluation_seed / evaluation_guidance). We need `prompt` and a seed; `categories` (comma-separated,
multi-label) groups the table; guidance and size are taken from the row unless overridden. Other
columns are kept but unused.

The adversarial nudity sets that follow I2P (ESD's nudity.csv and the attack sets built on it) have
`prompt` and, optionally, `evaluation_seed`/`evaluation_guidance` (or the sd_ spellings) and
`categories`; read with `require_seed=False`, a row without a seed uses its 0-based row number.
"""
import csv
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError

SEED_COLUMNS = ("sd_seed", "evaluation_seed")
GUIDANCE_COLUMNS = ("sd_guidance_scale", "evaluation_guidance")
NO_CATEGORY = "uncategorised"


@dataclass(frozen=True)
class EvalPrompt:
    index: int  # 0-based row number among the data rows: the key results are stored under
    prompt: str
    categories: tuple
    seed: int
    guidance: float | None
    width: int | None
    height: int | None


def _first(row, names):
    for name in names:
        value = (row.get(name) or "").strip()
        if value:
            return value
    return None


def _number(text, kind, line, column, path):
    try:
        value = float(text)
        if kind is int:
            if value != int(value):
                raise ValueError
            value = int(value)
        return value
    except ValueError:
        raise InvalidInputError(f"{path}: line {line}: {column} must be a{'n integer' if kind is int else ' number'}, "
                                f"got {text!r}") from None


def read_prompts(path, require_seed=True):
    """The rows of an I2P-format CSV as `EvalPrompt`s; `InvalidInputError` naming the line and column
    for anything unusable. Without `require_seed`, a row with no seed gets its row number as seed."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such prompts file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as error:
        raise InvalidInputError(f"{path}: not a readable CSV file ({error})") from None
    if "prompt" not in columns or (require_seed and not any(c in columns for c in SEED_COLUMNS)):
        raise InvalidInputError(f"{path}: expected the I2P columns 'prompt' and 'sd_seed' (or 'evaluation_seed'); "
                                f"found {', '.join(columns) or 'no header'}")
    prompts = []
    for index, row in enumerate(rows):
        line = index + 2  # the header is line 1
        text = (row.get("prompt") or "").strip()
        if not text:
            raise InvalidInputError(f"{path}: line {line}: the prompt is empty")
        seed = _first(row, SEED_COLUMNS)
        if seed is None and not require_seed:
            seed = str(index)
        if seed is None:
            raise InvalidInputError(f"{path}: line {line}: no seed in {' or '.join(SEED_COLUMNS)}")
        guidance = _first(row, GUIDANCE_COLUMNS)
        width, height = _first(row, ("sd_image_width",)), _first(row, ("sd_image_height",))
        categories = tuple(c.strip() for c in (row.get("categories") or "").split(",") if c.strip())
        prompts.append(EvalPrompt(
            index=index, prompt=text, categories=categories or (NO_CATEGORY,),
            seed=_number(seed, int, line, "sd_seed", path),
            guidance=None if guidance is None else _number(guidance, float, line, "sd_guidance_scale", path),
            width=None if width is None else _number(width, int, line, "sd_image_width", path),
            height=None if height is None else _number(height, int, line, "sd_image_height", path),
        ))
    if not prompts:
        raise InvalidInputError(f"{path}: the file has a header but no prompts")
    return prompts
