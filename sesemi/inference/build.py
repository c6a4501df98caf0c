"""Rebuild a trained network from the training config stored in its checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import Tensor, nn

from sesemi import resolvers
from sesemi.errors import ConfigError

log = logging.getLogger("sesemi")


def instantiate(cfg: DictConfig, key: str) -> Any:
    """The node at ``key`` of the checkpoint's config, built as training built it.

    A fix that points at the training option ``run.src_dir`` is reworded for inference, whose option is ``src_dir``.
    """
    from sesemi.builders import instantiate_key

    resolvers.register()  # a stored config may still hold sesemi's ${datapath:...} and the like
    try:
        return instantiate_key(cfg, key)
    except ConfigError as err:
        if "run.src_dir" not in err.fix:
            raise
        raise ConfigError(err.key, err.problem, err.fix.replace("run.src_dir", "src_dir")) from err


def _backbone(cfg: DictConfig) -> nn.Module:
    """The backbone as configured; pretrained-weight files that are gone are skipped (the checkpoint has weights)."""
    try:
        return instantiate(cfg, "model.backbone")
    except ConfigError:
        node = cfg.model.backbone
        keys = [k for k in ("weights", "pretrained_file") if node.get(k) is not None]
        if not keys:
            raise
        stripped = OmegaConf.create(OmegaConf.to_container(cfg))
        for k in keys:
            stripped.model.backbone[k] = None
        log.warning(
            "sesemi: building the backbone without its pretrained %s (the checkpoint's weights replace them): %s",
            " / ".join(keys),
            ", ".join(str(node[k]) for k in keys),
        )
        return instantiate(stripped, "model.backbone")


def build_classifier(cfg: DictConfig, net_state: Mapping[str, Tensor], num_classes: int, weights: str) -> nn.Module:
    """The backbone and head of ``cfg.model`` with ``net_state`` loaded, in eval mode without gradients."""
    from sesemi.module import Classifier

    backbone = _backbone(cfg)
    features = getattr(backbone, "out_features", None)
    if not isinstance(features, int):
        raise ConfigError(
            "model.backbone",
            f"{type(backbone).__name__} has no int attribute out_features",
            "a sesemi backbone must expose the size of its feature vector",
        )
    model = Classifier(backbone, instantiate(cfg, "model.head")(in_features=features, num_classes=num_classes))
    try:
        model.load_state_dict(net_state)
    except RuntimeError as err:
        lines = str(err).splitlines()
        raise ConfigError(
            "checkpoint",
            f"its {weights} weights do not fit the model its config builds ({num_classes} classes): "
            f"{lines[0]} {lines[-1]}",
            "check classes=[...] (one name per output) and that the checkpoint is intact",
        ) from err
    return model.eval().requires_grad_(False)


def trained_with_flips(cfg: DictConfig) -> bool:
    """Whether the training views (``data.labeled_views`` / ``unlabeled_views``) mirror images horizontally."""
    data = cfg.get("data") or {}
    nodes = [data.get(k) for k in ("labeled_views", "unlabeled_views")]
    try:
        resolvers.register()
        views = [OmegaConf.to_container(node, resolve=True) for node in nodes if OmegaConf.is_config(node)]
    except OmegaConfBaseException:  # a config that does not resolve outside its run: judge by its augment group
        views = [OmegaConf.to_container(cfg.augment)] if OmegaConf.is_config(cfg.get("augment")) else []
    return "HorizontalFlip" in repr(views)
