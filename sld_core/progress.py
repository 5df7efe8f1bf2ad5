"""Progress reporting that suits where it goes: a tqdm bar on a terminal, plain lines elsewhere.

tqdm redraws its bar with carriage returns and cursor codes, which turn a redirected log (`sld run ...
2> run.log`, a CI console) into one unreadable line. When the stream is not a terminal, `progress_bar`
returns a `PlainProgress` instead: one ordinary line every `every` percent of the way and at the end.
"""
import sys


def progress_bar(iterable=None, total=None, desc="", unit="it", disable=False, leave=True, file=None, every=10):
    """A tqdm bar when `file` (default stderr) is a terminal, else a `PlainProgress`; both support
    iteration, `update`, `n`, `set_postfix` and `close`."""
    file = file if file is not None else sys.stderr
    if disable or _is_terminal(file):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, leave=leave, file=file)
    return PlainProgress(iterable, total=total, desc=desc, unit=unit, file=file, every=every)


def _is_terminal(file):
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class PlainProgress:
    """Plain progress lines, `desc: n/total unit (p%) key=value`, each `every` percent and at the end."""

    def __init__(self, iterable=None, total=None, desc="", unit="it", file=None, every=10):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.file, self.every = desc, unit, file, every
        self.n = 0
        self.postfix = ""
        self._bucket = 0  # the last `every`-percent step a line was written for
        self._written = 0  # n when the last line was written
        self._closed = False

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def update(self, n=1):
        self.n += n
        if self.total:
            bucket = min(100, 100 * self.n // self.total) // self.every
            if bucket > self._bucket:
                self._bucket = bucket
                self._write()

    def set_postfix(self, **values):
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def close(self):
        """Write where it stopped, unless the last line already says so."""
        if not self._closed and self.n != self._written:
            self._write()
        self._closed = True

    def _write(self):
        of = f"/{self.total}" if self.total else ""
        percent = f" ({100 * self.n // self.total}%)" if self.total else ""
        postfix = f" {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit}{percent}{postfix}", file=self.file, flush=True)
        self._written = self.n
