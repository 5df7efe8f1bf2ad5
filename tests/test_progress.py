"""Progress output suits where it goes: tqdm's redrawn bar on a terminal, plain lines in a log."""
import io

from tqdm import tqdm

from comfyui_sld.sld_core.progress import PlainProgress, progress_bar


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_terminal_gets_tqdm_and_anything_else_plain_lines():
    assert isinstance(progress_bar(total=3, file=Terminal()), tqdm)
    assert isinstance(progress_bar(total=3, file=io.StringIO()), PlainProgress)
    assert isinstance(progress_bar(total=3, file=object()), PlainProgress)  # no isatty at all


def test_plain_lines_every_ten_percent_and_where_it_stopped():
    out = io.StringIO()
    bar = progress_bar(total=50, desc="sampling", unit="step", file=out)
    for _ in range(23):
        bar.update(1)
    bar.close()  # stopped early: the last line says where
    assert out.getvalue().splitlines() == [f"sampling: {n}/50 step ({2 * n}%)" for n in (5, 10, 15, 20)] + [
        "sampling: 23/50 step (46%)"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_iterating_reports_each_step_of_a_short_run_with_its_postfix():
    out = io.StringIO()
    bar = progress_bar(["a", "b", "c"], desc="sld eval", unit="batch", file=out)
    for i, _ in enumerate(bar):
        bar.set_postfix(unsafe=f"{i}/3")
    assert out.getvalue().splitlines() == ["sld eval: 1/3 batch (33%) unsafe=0/3", "sld eval: 2/3 batch (66%) unsafe=1/3",
                                           "sld eval: 3/3 batch (100%) unsafe=2/3"]


def test_nothing_done_nothing_said_and_disabled_says_nothing():
    out = io.StringIO()
    progress_bar([], desc="x", file=out).close()
    bar = progress_bar(total=4, desc="x", file=out, disable=True)
    bar.update(4)
    bar.close()
    assert out.getvalue() == ""
