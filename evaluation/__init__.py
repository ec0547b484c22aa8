"""Evaluation: COCO bbox/segm (pycocotools' own numbers), detection confusion matrix,
semantic segmentation and classification+localization metrics, and reports
(JSON, Markdown, self-contained HTML, PNG plots).

Imports only `data` of detseg.
"""
