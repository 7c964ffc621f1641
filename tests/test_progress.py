"""Progress off a terminal: whole lines a log can hold, and the switch that silences them."""

from __future__ import annotations

import io

from zoo.runtime.progress import LineProgress, progress


def test_line_progress_prints_whole_lines_with_rate_and_eta():
    out = io.StringIO()
    bar = LineProgress(100, "epoch 2/12", initial=40, interval=0.0, file=out)
    bar.set_postfix(loss="1.234")
    bar.update(10)
    bar.close()
    (line,) = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert line.startswith("epoch 2/12: 50/100 img (50%)  ") and line.endswith("  loss 1.234")
    assert " img/s  eta " in line


def test_line_progress_waits_for_its_interval():
    out = io.StringIO()
    bar = LineProgress(100, "eval", interval=3600.0, file=out)
    for _ in range(10):
        bar.update(10)
    assert out.getvalue() == ""


def test_progress_off_a_terminal_is_line_based_and_can_be_silenced(monkeypatch):
    assert isinstance(progress(10, "x"), LineProgress)  # pytest's stderr is not a terminal
    assert progress(10, "x", enabled=False) is None
    monkeypatch.setenv("ZOO_NO_PROGRESS", "1")
    assert progress(10, "x") is None
