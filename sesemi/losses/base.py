"""The loss-head plug-in API.

A loss head is one term of the training objective. At each step the training module builds a :class:`StepContext`
(the batch, the backbone and classification head, the EMA teacher when there is one, the step) and calls every head;
the total loss is ``sum(head.weight * head.ramp(step) * head(ctx))``. Adding a method is adding one loss head.

A head that makes pseudo-labels hands them to :meth:`StepContext.report_pseudo_labels`; the training module scores
them against the unlabeled pool's true labels when those are known (one mechanism for every head, see
:mod:`sesemi.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

View = tuple[str, str]
"""A (stream, view) pair naming a batch of images, e.g. ``("unlabeled", "strong")``."""


def sum_across_ranks(t: Tensor) -> Tensor:
    """``t`` summed over all processes when training is distributed (``t`` itself otherwise).

    For heads that keep statistics of the whole (global) batch, such as FreeMatch's thresholds, so every rank holds
    the same state. Every rank must call it at the same point of its step."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_across_ranks(t: Tensor) -> Tensor:
    """``t`` of every process concatenated along dim 0 (``t`` itself when not distributed); same shape per rank."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, t.contiguous())
        return torch.cat(parts)
    return t


class PseudoLabels(NamedTuple):
    """Hard pseudo-labels a head trained on, as reported to :meth:`StepContext.report_pseudo_labels`."""

    labels: Tensor  # [N] int class per sample
    mask: Tensor  # [N] float, 1 where the loss used the pseudo-label
    stream: str  # the stream the samples came from; its ``index`` identifies them


class StepContext:
    """What a loss head sees at one training step, with student/teacher forwards computed once and shared.

    ``batch`` maps a stream name (``labeled``, ``unlabeled``) to its views (e.g. ``weak``, ``strong``) and ``target``;
    a stream the data module did not load this step (None, e.g. the unlabeled stream during a warm-up) is left out.
    Student logits for every view the heads declare are computed in one concatenated forward pass (as FixMatch
    does, so batch-norm statistics cover labeled and unlabeled data together); the views heads read only without
    gradients (``detached_views``, e.g. FixMatch's weak view with ``separate_weak_forward``) in a second one under
    ``torch.no_grad`` (no backward through them); other views are computed on demand.
    ``teacher`` is the EMA copy of the network (a module with ``backbone`` and ``head``, like
    :class:`sesemi.Classifier`); its features and logits are computed once per view, without gradients.
    Unlabeled samples carry their ``index`` in the unlabeled pool (:meth:`indices`), never their label.
    """

    def __init__(
        self,
        batch: Mapping[str, Mapping[str, Any] | None],
        backbone: nn.Module,
        head: nn.Module,
        step: int,
        declared_views: list[View],
        teacher: nn.Module | None = None,
        log: Callable[[str, Tensor], None] | None = None,
        detached_views: list[View] = (),
    ) -> None:
        self.batch = {stream: views for stream, views in batch.items() if views is not None}
        self.backbone = backbone
        self.head = head
        self.step = step
        self.teacher = teacher
        self._declared = [v for v in dict.fromkeys(declared_views) if v[0] in self.batch]
        self._detached = [v for v in dict.fromkeys(detached_views) if v[0] in self.batch and v not in self._declared]
        self._features: dict[View, Tensor] = {}
        self._logits: dict[View, Tensor] = {}
        self._teacher_features: dict[View, Tensor] = {}
        self._teacher_logits: dict[View, Tensor] = {}
        self._log = log
        self.metrics: dict[str, Tensor] = {}
        self.class_metrics: dict[str, Tensor] = {}
        self.pseudo_labels: dict[str, PseudoLabels] = {}
        self.scope = ""

    def images(self, stream: str, view: str) -> Tensor:
        try:
            return self.batch[stream][view]
        except KeyError:
            available = {s: [k for k in v if k != "target"] for s, v in self.batch.items()}
            raise KeyError(
                f"no view {view!r} in stream {stream!r}; the batch has {available}. Add the view to "
                f"data.{stream}_views or point the loss head at an existing one"
            ) from None

    def targets(self, stream: str = "labeled") -> Tensor:
        return self.batch[stream]["target"]

    def indices(self, stream: str = "unlabeled") -> Tensor:
        """Each sample's index in its stream's dataset, e.g. for a memory bank keyed by unlabeled sample."""
        return self.batch[stream]["index"]

    def features(self, stream: str, view: str) -> Tensor:
        """Student backbone features of a view, differentiable."""
        key = (stream, view)
        if key not in self._features:
            if key in self._declared:
                self._forward(self._declared)
            elif key in self._detached:
                with torch.no_grad():
                    self._forward(self._detached)
            else:
                self._features[key] = self.backbone(self.images(stream, view))
        return self._features[key]

    def logits(self, stream: str, view: str) -> Tensor:
        """Student class logits of a view, differentiable."""
        key = (stream, view)
        if key not in self._logits:
            self._logits[key] = self.head(self.features(stream, view))
        return self._logits[key]

    @torch.no_grad()
    def teacher_features(self, stream: str, view: str) -> Tensor:
        """Backbone features of the EMA teacher (the training module's EMA model), without gradients."""
        if self.teacher is None:
            raise RuntimeError("this loss head needs an EMA teacher: set ema.decay (e.g. ema.decay=0.999)")
        key = (stream, view)
        if key not in self._teacher_features:
            self._teacher_features[key] = self.teacher.backbone(self.images(stream, view))
        return self._teacher_features[key]

    @torch.no_grad()
    def teacher_logits(self, stream: str, view: str) -> Tensor:
        """Class logits of the EMA teacher, without gradients."""
        key = (stream, view)
        if key not in self._teacher_logits:
            features = self.teacher_features(stream, view)
            self._teacher_logits[key] = self.teacher.head(features)
        return self._teacher_logits[key]

    @property
    def logging(self) -> bool:
        """Whether this step's logs reach the loggers; a head can skip computing what it would only log."""
        return self._log is not None

    def log(self, name: str, value: Tensor) -> None:
        """Log a scalar under the calling head's config key, e.g. ``mask_ratio`` of head ``fixmatch`` as
        ``train/fixmatch/mask_ratio``. The value is copied (no host sync), so logging a buffer is safe."""
        name = f"{self.scope}/{name}" if self.scope else name
        value = value.detach().clone()
        self.metrics[name] = value
        if self._log is not None:
            self._log(name, value)

    def log_per_class(self, name: str, values: Tensor) -> None:
        """Log one value per class (e.g. FreeMatch's class thresholds); the training module names each curve by
        its class, ``<head>_<name>/<class name>``. Only kept on steps that log."""
        if self._log is not None:
            self.class_metrics[f"{self.scope}_{name}" if self.scope else name] = values.detach().clone()

    def report_pseudo_labels(self, labels: Tensor, mask: Tensor, stream: str = "unlabeled") -> None:
        """Hand the hard pseudo-labels this head trains on (``mask``: 1 where the loss used them) to the training
        module, which logs their precision and recall against the true labels when the data module knows them.
        Keeps references only: free when nothing is logged."""
        self.pseudo_labels[self.scope] = PseudoLabels(labels, mask, stream)

    def _forward(self, views: list[View]) -> None:
        images = [self.images(*v) for v in views]
        sizes = [len(x) for x in images]
        features = self.backbone(torch.cat(images)) if len(images) > 1 else self.backbone(images[0])
        for view, f in zip(views, features.split(sizes)):
            self._features[view] = f


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2), the Laine & Aila / Mean Teacher ramp-up, reaching 1 at ``length`` steps."""
    if length <= 0 or step >= length:
        return 1.0
    t = max(step, 0) / length
    return math.exp(-5.0 * (1.0 - t) ** 2)


def linear_rampup(step: int, length: int) -> float:
    if length <= 0 or step >= length:
        return 1.0
    return max(step, 0) / length


def _steps(value: float, total_steps: int) -> int:
    """A step count, or a fraction of ``total_steps`` when ``0 < value < 1`` (and the run length is known)."""
    if 0 < value < 1 and total_steps > 0:
        return int(value * total_steps)
    return int(value)


RAMPUPS: dict[str, Callable[[int, int], float]] = {"sigmoid": sigmoid_rampup, "linear": linear_rampup}


class LossHead(nn.Module):
    """Base class of loss heads.

    Subclasses implement :meth:`forward` (``ctx -> scalar loss``) and list the student views they read in
    :attr:`views` so the module can batch them into one forward, the student views they read only without gradients
    in :attr:`detached_views` (one forward without autograd) and the views only the EMA teacher reads in
    :attr:`teacher_views`. ``weight`` scales the loss; over ``rampup_steps`` (a step count, or below 1 a fraction of
    ``trainer.max_steps``) it ramps up from 0 with the ``rampup`` schedule (``sigmoid`` or ``linear``). Before
    ``start_step`` (same units) the head is off: its scale is 0, the module neither calls it nor forwards its views,
    and its streams are not loaded (e.g. ``start_step: 0.1`` on an unlabeled head makes the first tenth of the run
    a cheap supervised warm-up); its ramp-up then counts from ``start_step``. Heads with parameters of their own
    (e.g. the rotation classifier) create them in :meth:`build`, which receives the backbone's feature size.
    """

    views: tuple[View, ...] = ()
    detached_views: tuple[View, ...] = ()
    teacher_views: tuple[View, ...] = ()

    def __init__(
        self, weight: float = 1.0, rampup_steps: float = 0, rampup: str = "sigmoid", start_step: float = 0
    ) -> None:
        super().__init__()
        if rampup not in RAMPUPS:
            raise ValueError(f"rampup must be one of {sorted(RAMPUPS)}, got {rampup!r}")
        if rampup_steps < 0:
            raise ValueError(f"rampup_steps must be >= 0, got {rampup_steps}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.weight = weight
        self.rampup_steps = rampup_steps
        self.rampup = rampup
        self.start_step = start_step

    def build(self, in_features: int, num_classes: int) -> None:
        """Create parameters that depend on the backbone's feature size or the number of classes."""

    def on_fit_start(self, pool_size: int | None) -> None:
        """Called when training starts (after a checkpoint is restored) with the unlabeled pool's size, over whose
        ``range`` :meth:`StepContext.indices` runs (None when the run has no unlabeled stream): for state kept per
        unlabeled sample, such as FlexMatch's latest confident predictions."""

    @property
    def streams(self) -> set[str]:
        """The streams the head reads (student or teacher views)."""
        return {stream for stream, _ in (*self.views, *self.detached_views, *self.teacher_views)}

    def first_step(self, total_steps: int = -1) -> int:
        """The step the head starts at: ``start_step``, a fraction of ``total_steps`` when below 1."""
        return _steps(self.start_step, total_steps)

    def scale(self, step: int, total_steps: int = -1) -> float:
        """``weight`` times the ramp-up at ``step`` (0 before :meth:`first_step`); a ``rampup_steps`` below 1 is a
        fraction of ``total_steps`` (``trainer.max_steps``), so a recipe's ramp-up follows a longer or shorter run."""
        start = self.first_step(total_steps)
        if step < start:
            return 0.0
        return self.weight * RAMPUPS[self.rampup](step - start, _steps(self.rampup_steps, total_steps))

    def forward(self, ctx: StepContext) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
