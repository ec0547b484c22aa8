"""`detseg explain` on the shared YOLO smoke run: PNGs and a self-contained page showing every method."""

from __future__ import annotations

import base64
import re

import pytest

from detseg.cli import main
from detseg.cli.explain_command import METHODS as CLI_METHODS

FAST = ["--max-detections", "1", "--min-score", "0", "--occlusion-patch", "32", "--occlusion-stride", "32",
        "--top-patches", "2", "--ascent-steps", "2"]


def test_cli_methods_are_the_workflows():
    from detseg.workflows.explain import METHODS

    assert CLI_METHODS == METHODS


@pytest.mark.slow
def test_explain_writes_pngs_and_one_self_contained_page_per_image(smoke_run, synthetic_dir, tmp_path, capsys):
    run_dir = smoke_run("yolo").result.run_dir
    images = sorted((synthetic_dir / "images").glob("*"))[:2]
    out = tmp_path / "explain"
    assert main(["explain", str(run_dir), "--images", *map(str, images), "--out", str(out), *FAST]) == 0
    for image in images:
        page = (out / f"{image.stem}.html").read_text(encoding="utf-8")
        for title in ("saliency", "guided backprop", "deconvnet", "Grad-CAM at P4", "occlusion",
                      "First-layer filters", "Maximally activating patches", "Feature embedding",
                      "Class model visualization"):
            assert title in page, title
        assert "src='data:image/png;base64," in page and "src='http" not in page and "src='/" not in page
        for encoded in re.findall(r"base64,([A-Za-z0-9+/=]+)'", page):
            assert base64.b64decode(encoded).startswith(b"\x89PNG")
        for method in ("input", "saliency", "guided_backprop", "deconvnet", "grad_cam", "occlusion"):
            assert (out / image.stem / f"1_{method}.png").read_bytes().startswith(b"\x89PNG")
    assert (out / "model" / "filters.png").is_file() and (out / "model" / "patches.png").is_file()
    assert f"-> {out / (images[0].stem + '.html')}" in capsys.readouterr().out


def test_a_layer_the_model_lacks_is_named_by_its_flag_and_nothing_is_written(smoke_run, synthetic_dir, tmp_path,
                                                                             capsys):
    run_dir = smoke_run("yolo").result.run_dir
    image = sorted((synthetic_dir / "images").glob("*"))[0]
    out = tmp_path / "explain"
    code = main(["explain", str(run_dir), "--images", str(image), "--out", str(out), "--grad-cam-layer", "P9"])
    error = capsys.readouterr().err.strip()
    assert code == 2 and error.startswith("detseg: error: --grad-cam-layer no layer named 'P9'")
    assert len(error.splitlines()) == 1 and not out.exists()
