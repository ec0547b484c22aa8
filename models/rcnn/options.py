"""`TwoStageOptions`: every non-weight setting of Faster / Mask R-CNN, in one frozen dataclass.

Weights live in the layers (`FeaturePyramid`, `RPNHead`, `BoxHead`, `MaskHead`); these
options say how anchors are laid out, how targets are sampled, how proposals and
detections are filtered and how the losses are weighted. Defaults suit small images
(128-512 px) and a small backbone; the comments give the paper values where they differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from detseg.models.ops.nms import NmsConfig
from detseg.models.rcnn.rpn_proposals import ProposalConfig

LOSS_NAMES = ("rpn_objectness", "rpn_box", "roi_class", "roi_box", "mask")


class TwoStageConfigError(ValueError):
    """Two-stage detector options or parts that do not fit together; the message says which."""


def _default_loss_weights() -> dict[str, float]:
    return {name: 1.0 for name in LOSS_NAMES}


@dataclass(frozen=True)
class TwoStageOptions:
    """Settings of the two-stage detector (see the field comments)."""

    # Anchors: one base size per pyramid level (ascending levels); x scales x ratios per cell.
    anchor_sizes: tuple[float, ...] = (16.0, 32.0, 64.0)  # FPN paper: 32..512 over P2..P6
    anchor_scales: tuple[float, ...] = (1.0, 2.0)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    # RPN training targets.
    rpn_samples: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_positive_iou: float = 0.7
    rpn_negative_iou: float = 0.3
    # Proposals while training and at inference.
    train_proposals: ProposalConfig = field(default_factory=lambda: ProposalConfig(1000, 256, 0.7, 1.0))
    test_proposals: ProposalConfig = field(default_factory=lambda: ProposalConfig(500, 200, 0.7, 1.0))
    # RoI sampling for the box (and mask) head.
    rois_per_image: int = 128          # paper: 512
    roi_positive_fraction: float = 0.25
    roi_positive_iou: float = 0.5
    roi_negative_iou: float = 0.5
    # RoIAlign.
    box_roi_size: int = 7
    mask_roi_size: int = 14
    sampling_ratio: int = 2
    canonical_size: float = 112.0      # RoI side pooled from canonical_level (FPN eq. 1: 224)
    canonical_level: int = 4
    # Mask R-CNN: positive RoIs per image that train the mask head (the first ones sampled).
    # The mask branch costs ~30 MFLOP per RoI at 64 channels: on a CPU, a few per image.
    masks_per_image: int = 16
    # Final detections.
    nms: NmsConfig = field(default_factory=lambda: NmsConfig(0.5, 0.05, 100))
    loss_weights: dict = field(default_factory=_default_loss_weights)

    def __post_init__(self):
        for name in ("anchor_sizes", "anchor_scales", "anchor_ratios"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        unknown = sorted(set(self.loss_weights) - set(LOSS_NAMES))
        if unknown:
            raise TwoStageConfigError(f"loss_weights: unknown loss(es) {unknown}; expected {list(LOSS_NAMES)}")
        object.__setattr__(self, "loss_weights", {**_default_loss_weights(), **self.loss_weights})
        for name in ("rpn_positive_fraction", "roi_positive_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise TwoStageConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if self.rois_per_image > self.train_proposals.post_nms_top_k:
            raise TwoStageConfigError(
                f"rois_per_image ({self.rois_per_image}) exceeds train_proposals.post_nms_top_k "
                f"({self.train_proposals.post_nms_top_k}): there would not be enough RoIs to sample")
        if self.masks_per_image > self.rois_per_image:
            raise TwoStageConfigError(f"masks_per_image ({self.masks_per_image}) exceeds rois_per_image "
                                      f"({self.rois_per_image})")

    @property
    def anchors_per_cell(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)

    def to_dict(self) -> dict:
        """JSON-ready; `TwoStageOptions.from_dict(options.to_dict()) == options`."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["train_proposals"] = asdict(self.train_proposals)
        out["test_proposals"] = asdict(self.test_proposals)
        out["nms"] = self.nms.get_config()
        for name in ("anchor_sizes", "anchor_scales", "anchor_ratios"):
            out[name] = list(out[name])
        out["loss_weights"] = dict(self.loss_weights)
        return out

    @classmethod
    def from_dict(cls, values: dict | None) -> "TwoStageOptions":
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TwoStageConfigError(f"unknown two-stage option(s) {unknown}; valid: {sorted(known)}")
        for name in ("train_proposals", "test_proposals"):
            if isinstance(values.get(name), dict):
                values[name] = ProposalConfig(**values[name])
        if isinstance(values.get("nms"), dict):
            values["nms"] = NmsConfig(**values["nms"])
        return cls(**values)
