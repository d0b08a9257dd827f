"""The campaign report: every figure drawn in the store's palette, a page a real headless Chromium loads
from disk with every image resolved and no console error, and a rerun with nothing changed that writes
nothing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from semscale.cli import main
from semscale.report import figures
from semscale.report.page import Section, render
from semscale.store import PHASE_COLORS
from tests.browser import load_page

FIGURES = {"confusion.png", "violins.png", "phase_fractions.png", "densities.png", "robustness.png"}


def _report_files(store: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (store / "report").iterdir() if p.is_file()}


def test_the_report_of_a_run_holds_every_figure_and_loads_in_chromium(tiny_campaign_store: Path,
                                                                        tmp_path: Path) -> None:
    index = tiny_campaign_store / "report" / "index.html"
    html = index.read_text()
    names = {p.name for p in index.parent.glob("*.png")}
    overlays = {f"overlay_{i}.png" for i in ("t000_a", "t030_a", "t120_a")}
    assert FIGURES | overlays <= names
    page = load_page(index)
    assert page.errors == []
    assert page.title.endswith(": unet")
    srcs = {img["src"] for img in page.images}
    assert srcs == FIGURES | overlays
    assert all(img["complete"] and img["width"] > 100 and img["height"] > 50 for img in page.images), page.images
    assert "Time per image [min]" in html and "240 (semi-manual)" in html and "0.05 (A100, stride 256)" in html
    assert page.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(page.screenshot) > 50_000
    # a page whose figure is missing is caught by the same check
    broken = tmp_path / "broken"
    shutil.copytree(index.parent, broken)
    (broken / "violins.png").unlink()
    missing = load_page(broken / "index.html")
    assert any(not img["complete"] or img["width"] == 0 for img in missing.images if img["src"] == "violins.png")


def test_a_rerun_with_nothing_changed_writes_nothing_and_a_change_rebuilds(tiny_campaign_store: Path,
                                                                            tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "campaign.zarr"
    shutil.copytree(tiny_campaign_store, store)
    before = _report_files(store)
    assert main(["report", str(store)]) == 0
    assert capsys.readouterr().out.startswith("unchanged:")
    assert _report_files(store) == before
    (store / "report" / "densities.png").unlink()  # a lost figure is drawn again
    assert main(["report", str(store), "--json"]) == 0
    assert '"changed": true' in capsys.readouterr().out
    after = _report_files(store)
    assert after["densities.png"][1] == before["densities.png"][1]  # same inputs, same bytes


def test_label_colours_are_the_store_palette() -> None:
    rgb = figures.label_rgb(np.array([[0, 1], [2, 255]], np.uint8), ["pore", "NiO", "Ni", "YSZ"])
    for value, name in enumerate(("pore", "NiO", "Ni")):
        np.testing.assert_allclose(rgb[value // 2, value % 2], np.array(PHASE_COLORS[name][:3]) / 255)
    np.testing.assert_allclose(rgb[1, 1], 1.0)  # unlabelled: white


def test_the_same_figure_is_the_same_bytes(tmp_path: Path) -> None:
    result = {"classes": ["a", "b"], "confusion": [[90, 10], [5, 95]], "accuracy": 0.925, "mean_iou": 0.86}
    one = figures.plot_confusions([("x", result)], tmp_path / "1.png")
    two = figures.plot_confusions([("x", result)], tmp_path / "2.png")
    assert one.read_bytes() == two.read_bytes()


def test_the_page_escapes_what_it_shows() -> None:
    html = render(title="a <b>", sections=[Section("s & t", note="<i>", images=["x.png"],
                                                   table=(["h"], [["<td>"]]))], footer="f")
    assert "a &lt;b&gt;" in html and "s &amp; t" in html and "&lt;td&gt;" in html and 'src="x.png"' in html
    assert "<script" not in html and "http" not in html  # opens offline, as it is
