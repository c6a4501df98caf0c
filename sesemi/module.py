"""The LightningModule: a backbone and a classification head trained by a sum of loss heads."""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from sesemi.checkpoints import Mismatch, load_checkpoint
from sesemi.compat.lightning import should_update_logs
from sesemi.ema import EMA
from sesemi.errors import ConfigError, override
from sesemi.loggers import flat_config
from sesemi.losses.base import LossHead, StepContext
from sesemi.metrics import class_tags, confusion_matrix_image, per_class_accuracy, pseudo_label_quality

HeadFactory = Callable[..., nn.Module]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]


class Classifier(nn.Module):
    """Backbone followed by a classification head; the network that is evaluated, averaged and exported."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.backbone(x))


def _feature_size(backbone: nn.Module) -> int:
    size = getattr(backbone, "out_features", None)
    if not isinstance(size, int):
        raise TypeError(
            f"backbone {type(backbone).__name__} has no int attribute 'out_features'; a sesemi backbone must "
            "expose the size of the feature vector it returns"
        )
    return size


_PRETRAINED_FIX = (
    "give run.pretrained_checkpoint a checkpoint of this model (a run's checkpoints/best.ckpt) or a state dict of "
    "its backbone, or train from scratch: run.pretrained_checkpoint=null"
)


def _pretrained_fix(path: str, whole: bool, differ: list[str]) -> str:
    """How to start from a file whose weights ``differ`` from the model's: from its backbone alone when only the
    head differs (another class count), with the command that writes that backbone's state dict."""
    if not (whole and all(k.startswith("model.head.") for k in differ)):
        return _PRETRAINED_FIX
    backbone = f"{Path(path).stem}_backbone.pt"
    code = (
        f"import torch; s = torch.load({str(path)!r}, weights_only=True)['state_dict']; p = 'model.backbone.'; "
        f"torch.save({{k[len(p):]: v for k, v in s.items() if k.startswith(p)}}, {backbone!r})"
    )
    return (
        "its head has another number of classes; start from its backbone alone, saved as a state dict of its own "
        f"with: python -c {shlex.quote(code)} then {override('run.pretrained_checkpoint', backbone)}"
    )


class SemiSupervisedModule(LightningModule):
    """Trains ``Classifier(backbone, head)`` with ``sum(weight * ramp(step) * loss)`` over the loss heads.

    ``head`` is a factory called as ``head(in_features=backbone.out_features, num_classes=num_classes)`` (a Hydra
    ``_partial_``). With ``ema_decay`` an :class:`~sesemi.ema.EMA` copy is kept; it is the teacher of heads that ask
    for one and, when ``ema_evaluate`` is set, the model that validation, test and prediction use.

    Besides the losses it logs what tells why a run does (not) learn: the precision and recall of the pseudo-labels
    every head reports (when the data module knows the unlabeled pool's labels), per-class values heads log, and at
    each validation and test the per-class accuracy and a confusion-matrix image; :attr:`class_results` keeps the
    latest confusion matrix and per-class accuracy of each stage for ``metrics.json``.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: HeadFactory,
        loss_heads: Mapping[str, LossHead | None],
        optimizer: OptimizerFactory,
        num_classes: int,
        class_names: list[str] | None = None,
        lr_scheduler: SchedulerFactory | None = None,
        ema_decay: float | None = None,
        ema_evaluate: bool = True,
        exclude_norm_and_bias_from_weight_decay: bool = True,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.model = Classifier(backbone, head(in_features=_feature_size(backbone), num_classes=num_classes))
        heads = {name: h for name, h in loss_heads.items() if h is not None}
        if not heads:
            raise ValueError("loss_heads is empty: at least one loss head (e.g. supervised) is needed")
        for loss_head in heads.values():
            loss_head.build(_feature_size(backbone), num_classes)
        self.loss_heads = nn.ModuleDict(heads)
        needs_teacher = [name for name, h in heads.items() if h.teacher_views]
        if needs_teacher and ema_decay is None:
            raise ConfigError(
                "method.ema.decay",
                f"is null but loss heads {needs_teacher} read the EMA teacher (pseudo_labels_from: teacher)",
                "set method.ema.decay (e.g. method.ema.decay=0.999) or pseudo_labels_from: student",
            )
        self.ema = EMA(self.model, ema_decay) if ema_decay is not None else None
        self.ema_evaluate = ema_evaluate and self.ema is not None
        self._ema_step = -1  # the global step the EMA was last updated at
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.exclude_norm_and_bias = exclude_norm_and_bias_from_weight_decay
        self.config = dict(config) if config is not None else None
        if config is not None:  # logged to every logger as the run's hyperparameters, with Hydra's dotted keys
            self.save_hyperparameters(flat_config(config))
        self.num_classes = num_classes
        self.class_names = list(class_names) if class_names else [str(i) for i in range(num_classes)]
        self.class_tags = class_tags(self.class_names)  # the class names in logged metric names
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_confusion = MulticlassConfusionMatrix(num_classes)
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.class_results: dict[str, dict[str, Any]] = {}
        self._unlabeled_truth: Tensor | None = None  # the unlabeled pool's labels by index; None: unknown, metrics off

    @property
    def eval_model(self) -> nn.Module:
        """The network used for validation, test and prediction: the EMA copy when ``ema_evaluate``."""
        return self.ema.module if self.ema_evaluate else self.model

    def forward(self, x: Tensor) -> Tensor:
        return self.eval_model(x)

    def _logs_this_step(self) -> bool:
        """Whether this training step's metrics reach the loggers: Lightning writes them every
        ``trainer.log_every_n_steps`` steps, and ``self.log`` costs as much Python time as a small network's forward
        pass, so the other steps skip it. The first and the last step log too (progress bar, ``metrics.json``)."""
        trainer = self._trainer  # None when the module is not attached (self.trainer would raise)
        if trainer is None or trainer.fast_dev_run or trainer.should_stop:
            return True
        step = self.global_step
        if step == 0 or (trainer.max_steps > 0 and step + 1 >= trainer.max_steps):
            return True
        return should_update_logs(trainer)

    def _max_steps(self) -> int:
        trainer = self._trainer
        return trainer.max_steps if trainer is not None else -1

    def stream_start_steps(self, total_steps: int) -> dict[str, int]:
        """Each stream the loss heads read, with the first step any of them reads it at (their ``start_step``, for a
        run of ``total_steps``): the data module need not load a stream before it."""
        starts: dict[str, int] = {}
        for h in self.loss_heads.values():
            for stream in h.streams:
                starts[stream] = min(starts.get(stream, h.first_step(total_steps)), h.first_step(total_steps))
        return starts

    def training_step(self, batch: Mapping[str, Mapping[str, Any] | None], batch_idx: int) -> Tensor:
        step = self.global_step
        log = self._logs_this_step()
        # A head whose scale is 0 this step (e.g. before its start_step) is not called and its views not forwarded.
        scales = {name: h.scale(step, self._max_steps()) for name, h in self.loss_heads.items()}
        active = {name: h for name, h in self.loss_heads.items() if scales[name] != 0}
        if not active:
            raise RuntimeError(
                f"no loss head is on at step {step} (scales {scales}): give at least one head (e.g. supervised) "
                "start_step 0 and a non-zero weight"
            )
        ctx = StepContext(
            batch,
            self.model.backbone,
            self.model.head,
            step,
            [view for h in active.values() for view in h.views],
            teacher=self.ema.module if self.ema is not None else None,
            log=(lambda name, value: self.log(f"train/{name}", value)) if log else None,
            detached_views=[view for h in active.values() for view in h.detached_views],
        )
        total: Tensor | float = 0.0
        for name, loss_head in active.items():
            ctx.scope = name
            loss = loss_head(ctx)
            if log:
                self.log(f"train/loss_{name}", loss.detach())
            total = total + scales[name] * loss
        if log:  # not prog_bar: Lightning would .item() it after every step (sesemi's ProgressBar shows it)
            self.log("train/loss", total.detach())
            self._log_class_metrics(ctx)
        return total

    def on_fit_start(self) -> None:
        truth = getattr(self.trainer.datamodule, "unlabeled_targets", lambda: None)()
        self._unlabeled_truth = truth.to(self.device) if truth is not None else None
        datamodule = self.trainer.datamodule
        pool_size = len(datamodule.unlabeled_dataset()) if getattr(datamodule, "has_unlabeled", False) else None
        for loss_head in self.loss_heads.values():
            loss_head.on_fit_start(pool_size)

    def _log_class_metrics(self, ctx: StepContext) -> None:
        """On logging steps: the heads' per-class values, and the quality of the pseudo-labels they reported."""
        curves = [(name, values, self.class_tags) for name, values in ctx.class_metrics.items()]
        if self._unlabeled_truth is not None:
            for scope, reported in ctx.pseudo_labels.items():
                truth = self._unlabeled_truth[ctx.indices(reported.stream)]
                quality = pseudo_label_quality(reported.labels, reported.mask, truth, self.num_classes)
                overall = torch.stack([quality["precision"], quality["recall"]])
                curves.append((f"train/{scope}", overall, ["pl_precision", "pl_recall"]))
                curves.append((f"{scope}_pl_precision", quality["precision_per_class"], self.class_tags))
                curves.append((f"{scope}_pl_recall", quality["recall_per_class"], self.class_tags))
        self._log_curves(curves)

    def _log_curves(self, curves: list[tuple[str, Tensor, list[str]]]) -> None:
        """Write ``values[i]`` as ``<group>/<names[i]>`` for each ``(group, values, names)`` straight to the loggers,
        in one call with one host sync: a ``self.log`` per class would cost about as much as a training step, so
        these are not callback metrics. NaN (undefined: e.g. no pseudo-label of that class this step) is left out,
        so a curve has a gap rather than a NaN point."""
        if not curves or not self.loggers or not self.trainer.is_global_zero:
            return
        values = torch.cat([v.detach().float().flatten() for _, v, _ in curves]).tolist()
        tags = [f"{group}/{name}" for group, _, names in curves for name in names]
        scalars = {t: v for t, v in zip(tags, values) if not math.isnan(v)}
        for logger in self.loggers:
            logger.log_metrics(scalars, step=self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # Once per optimizer step: with gradient accumulation the batches in between change no weights.
        if self.ema is not None and self.global_step != self._ema_step:
            self._ema_step = self.global_step
            self.ema.update(self.model)

    def _evaluate(
        self, batch: Mapping[str, Tensor], stage: str, metric: MulticlassAccuracy, confusion: MulticlassConfusionMatrix
    ) -> None:
        logits = self.eval_model(batch["image"])
        target = batch["target"]
        self.log(f"{stage}/loss", nn.functional.cross_entropy(logits, target), sync_dist=True)
        metric(logits, target)
        self.log(f"{stage}/acc", metric, prog_bar=True)
        confusion.update(logits, target)

    def _log_confusion(self, stage: str, confusion: MulticlassConfusionMatrix) -> None:
        """Per-class accuracy as ``<stage>_class_acc/<class>`` curves, the confusion matrix as an image, and both in
        :attr:`class_results`. ``compute`` gathers the matrix over all ranks, so every rank calls it."""
        matrix = confusion.compute()
        confusion.reset()
        if self.trainer.sanity_checking:
            return
        accuracy = per_class_accuracy(matrix)
        for name, value in zip(self.class_tags, accuracy.tolist()):  # self.log: on the x of val/acc, once per eval
            if not math.isnan(value):
                self.log(f"{stage}_class_acc/{name}", value, sync_dist=True)  # same on every rank
        self.class_results[stage] = {
            "classes": self.class_names,
            "accuracy": {c: None if math.isnan(a) else a for c, a in zip(self.class_names, accuracy.tolist())},
            "confusion_matrix": matrix.tolist(),  # rows: true class, columns: predicted class
        }
        if self.trainer.is_global_zero:
            # Lightning logs a validation inside training at the step count before the current step's increment.
            step = max(self.global_step - 1, 0) if self.trainer.state.fn == "fit" else self.global_step
            image = None
            for logger in self.loggers:
                if hasattr(logger.experiment, "add_image"):  # TensorBoard
                    image = confusion_matrix_image(matrix, self.class_names) if image is None else image
                    logger.experiment.add_image(f"{stage}/confusion_matrix", image, global_step=step)

    def validation_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc, self.val_confusion)

    def on_validation_epoch_end(self) -> None:
        self._log_confusion("val", self.val_confusion)

    def test_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc, self.test_confusion)

    def on_test_epoch_end(self) -> None:
        self._log_confusion("test", self.test_confusion)

    def predict_step(self, batch: Mapping[str, Tensor], batch_idx: int) -> Tensor:
        return torch.softmax(self.eval_model(batch["image"]), dim=-1)

    def _parameter_groups(self) -> list[dict[str, Any]]:
        trainable: Iterable[nn.Module] = [self.model, self.loss_heads]
        decay, no_decay = [], []
        for module in trainable:
            for param in module.parameters():
                if not param.requires_grad:
                    continue
                (no_decay if self.exclude_norm_and_bias and param.ndim <= 1 else decay).append(param)
        groups = [{"params": decay, "name": "decay"}]  # the names become the LR curves' tags, lr/decay
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
        return groups

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self._parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "step", "name": "lr"},
        }

    def load_pretrained(self, path: str) -> None:
        """Initialise weights (not optimizer state or step) from a sesemi checkpoint or a backbone state dict.

        Every weight of the network (backbone and head; the backbone's alone for a state dict) must be in the file
        with its shape, or nothing is loaded and a :class:`ConfigError` names what differs: a file of another model
        never leaves part of the network at random while the run looks like a fine-tuning. The EMA copy and the
        loss heads' own layers are taken where they fit (the method may differ from the checkpoint's)."""
        key = "run.pretrained_checkpoint"
        state = load_checkpoint(path, key)
        whole = isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping)
        given = state["state_dict"] if whole else state
        target: nn.Module = self if whole else self.model.backbone
        if not isinstance(given, Mapping):
            raise ConfigError(key, f"{path} holds neither a checkpoint nor a state dict", _PRETRAINED_FIX)
        expected = target.state_dict()
        mismatch = Mismatch.of(expected, given)
        required = [k for k in mismatch.missing if not whole or k.startswith("model.")]
        reshaped = {k: v for k, v in mismatch.reshaped.items() if not whole or k.startswith("model.")}
        if required or reshaped:
            shown = Mismatch(missing=required, unexpected=mismatch.unexpected, reshaped=reshaped)
            raise ConfigError(
                key,
                f"{path} does not fit this run's {'model' if whole else 'backbone'} "
                f"({type(self.model.backbone).__name__}): {shown.describe(len(given))}",
                _pretrained_fix(path, whole, [*reshaped, *required]),
            )
        fitting = {k: given[k] for k in expected if k in given and k not in mismatch.reshaped}
        target.load_state_dict(fitting, strict=False)
        own = [k for k in expected if k not in fitting and not k.startswith("ema.")]  # e.g. a new loss head's
        if own or mismatch.unexpected:
            rank_zero_warn(
                f"pretrained checkpoint {path}: {len(own)} weights start afresh ({', '.join(own[:3])}...), "
                f"{len(mismatch.unexpected)} of the file are not used ({', '.join(mismatch.unexpected[:3])}...)"
            )
        if self.ema is not None and not any(k.startswith("ema.") for k in fitting):
            self.ema = EMA(self.model, self.ema.decay, self.ema.warmup)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.config is not None:
            checkpoint["sesemi_config"] = self.config
        checkpoint["sesemi_classes"] = self.class_names
