"""Stand-in for comfy/utils.py: the progress bar the sampling callback updates."""
PROGRESS_BAR_ENABLED = True

bars = []  # every ProgressBar made, newest last, so tests can read what the callback reported


class ProgressBar:
    def __init__(self, total):
        self.total = total
        self.current = 0
        self.updates = []  # (value, total) per update_absolute call
        bars.append(self)

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = value
        self.updates.append((value, self.total))

    def update(self, value):
        self.update_absolute(self.current + value)
