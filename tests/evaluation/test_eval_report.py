"""Report files: JSON with every number, Markdown, self-contained HTML, plots, examples."""

import base64
import json
import re

import numpy as np

from eval_fixtures import write_images
from detseg.data.coco import load_coco
from detseg.evaluation.detection_report import build_detection_report
from detseg.evaluation.example_images import render_examples
from detseg.evaluation.localization_metrics import ClassificationLocalizationMetrics
from detseg.evaluation.report import write_report
from detseg.evaluation.report_contents import localization_report, semantic_report
from detseg.evaluation.semantic_metrics import SemanticSegmentationMetrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _embedded_pngs(html):
    return [base64.b64decode(data) for data in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_detection_report_files_json_markdown_and_self_contained_html(coco_files, tmp_path):
    report = build_detection_report(coco_files["gt"], coco_files["segm"], ("bbox", "segm"), model="test-model",
                                    progress=False)
    dataset = load_coco(coco_files["gt"], write_images(tmp_path / "images"))
    examples = render_examples(dataset, coco_files["segm"], tmp_path / "out", num_images=2, with_masks=True)
    assert [p.name for p in examples] == ["image_11.png", "image_12.png"]
    written = write_report(tmp_path / "out", report, examples)

    saved = json.loads(written["json"].read_text())
    assert saved["coco"]["segm"]["stats_raw"] == report["coco"]["segm"]["stats_raw"]
    assert saved["source"]["model"] == "test-model" and saved["source"]["dataset"]["num_images"] == 4
    assert saved["settings"]["iou_types"] == ["bbox", "segm"]
    assert saved["examples"] == ["examples/image_11.png", "examples/image_12.png"]
    plot_files = {key: tmp_path / "out" / rel for key, rel in saved["plots"].items()}
    assert set(plot_files) == {"bbox_per_class_ap", "bbox_pr_curves", "segm_per_class_ap", "segm_pr_curves",
                               "confusion_matrix"}
    assert all(path.read_bytes().startswith(PNG_MAGIC) for path in plot_files.values())

    html = written["html"].read_text()
    assert html.count("<table>") == 2 + 2 * 2 + 1  # source, settings, 2 per IoU type, confusion
    for text in ("AP50", "zebra", "unicorn", "n/a", "background", "test-model", "COCO segm evaluation"):
        assert text in html
    ap = report["coco"]["bbox"]["stats"]["AP"]
    assert f"<td class=\"num\">{ap:.3f}</td>" in html
    images = _embedded_pngs(html)
    assert len(images) == len(plot_files) + len(examples) and all(i.startswith(PNG_MAGIC) for i in images)
    assert not re.search(r'src="(?!data:)', html)  # nothing outside the file

    markdown = written["markdown"].read_text()
    assert "| AP50 |" in markdown and f"| {ap:.3f} |" in markdown
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (tmp_path / "out" / link).is_file(), link


def test_empty_predictions_still_give_a_full_report(coco_files, tmp_path):
    report = build_detection_report(coco_files["gt"], [], ("bbox", "segm"), progress=False)
    written = write_report(tmp_path / "out", report)
    assert json.loads(written["json"].read_text())["coco"]["bbox"]["stats"]["AP"] == 0.0
    assert "bbox_pr_curves" in written and written["html"].is_file()


def test_semantic_and_localization_reports(tmp_path):
    semantic = SemanticSegmentationMetrics(3, ["sky", "road", "car"])
    semantic.update(np.array([[0, 1, 2, 255]]), np.array([[0, 1, 1, 0]]))
    written = write_report(tmp_path / "semantic", semantic_report(semantic.result(), {"dataset": "toy"}))
    html = written["html"].read_text()
    assert "mean IoU" in html and "<td>road</td>" in html
    assert f'<td class="num">{semantic.result()["mean_iou"]:.3f}</td>' in html
    assert len(_embedded_pngs(html)) == 2

    localization = ClassificationLocalizationMetrics(2, ["cat", "dog"])
    localization.update([0, 1], [[0, 0, 4, 4]] * 2, [0, 0], [[0, 0, 4, 4]] * 2)
    written = write_report(tmp_path / "cls", localization_report(localization.result()))
    saved = json.loads(written["json"].read_text())
    assert saved["classification_localization"]["accuracy"] == 0.5
    assert "localization accuracy" in written["html"].read_text()
