"""sesemi.sweep.plots: the short names of a study's parameters on the plots' axes."""

from __future__ import annotations

from sesemi.sweep.plots import short_names


def test_short_axis_names():
    keys = ["method.loss_heads.fixmatch.threshold", "method.loss_heads.fixmatch.weight", "optimizer.weight_decay"]
    assert short_names([*keys, "model.backbone.weight"]) == {
        keys[0]: "threshold",
        keys[1]: "fixmatch.weight",
        keys[2]: "weight_decay",
        "model.backbone.weight": "backbone.weight",
    }
