"""Exponential moving average of a model's weights, readable during training (teacher) and for evaluation."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules import module as _module

# Bumped whenever any module in the process registers a parameter, buffer or submodule: the tensor lists an EMA
# caches between updates are rebuilt after any change of the model's structure (or of its tensor objects).
_generation = 0


def _bump_generation(*args: Any) -> None:
    global _generation
    _generation += 1


for _register in (
    "register_module_parameter_registration_hook",
    "register_module_buffer_registration_hook",
    "register_module_module_registration_hook",
):
    if hasattr(_module, _register):
        getattr(_module, _register)(_bump_generation)
_CACHE_TENSOR_LISTS = all(
    hasattr(_module, name)
    for name in (
        "register_module_parameter_registration_hook",
        "register_module_buffer_registration_hook",
        "register_module_module_registration_hook",
    )
)


class EMA(nn.Module):
    """A frozen copy of ``model`` whose floating-point parameters and buffers track ``model`` with ``decay``.

    With ``warmup`` the decay starts low, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so early
    evaluations are not dominated by the random initialisation. The update count is a Python int (saved in the
    checkpoint), so an update costs no host-device synchronisation. The copy always stays in eval mode.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True) -> None:
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema.decay must be in [0, 1), got {decay}")
        self.module = copy.deepcopy(model).requires_grad_(False)
        self.module.eval()
        self.decay = decay
        self.warmup = warmup
        self.updates = 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        weight = 1.0 - self.current_decay()
        ema_float, src_float, ema_other, src_other = self._pairs(model)
        for ema_t, src_t in zip(ema_other, src_other):
            ema_t.copy_(src_t)
        torch._foreach_lerp_(ema_float, src_float, weight)

    def _pairs(self, model: nn.Module) -> tuple[list[Tensor], ...]:
        """The (EMA, model) tensors, floating-point ones apart. Walking both modules costs about as much as the
        update itself for small networks, so the lists are kept until a parameter, buffer or submodule is registered
        anywhere in the process (or the EMA is moved); a different ``model`` also rebuilds them."""
        key = (id(model), _generation)
        cache = self.__dict__.get("_pairs_cache")
        if cache is not None and cache[0] == key and _CACHE_TENSOR_LISTS:
            return cache[1]
        ema_float: list[Tensor] = []
        src_float: list[Tensor] = []
        ema_other: list[Tensor] = []
        src_other: list[Tensor] = []
        for ema_t, src_t in zip(self._tensors(self.module), self._tensors(model)):
            if ema_t.is_floating_point():
                ema_float.append(ema_t)
                src_float.append(src_t.detach())
            else:
                ema_other.append(ema_t)
                src_other.append(src_t)
        pairs = (ema_float, src_float, ema_other, src_other)
        self.__dict__["_pairs_cache"] = (key, pairs)
        return pairs

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_pairs_cache", None)
        return state

    def _apply(self, *args: Any, **kwargs: Any) -> EMA:
        self.__dict__.pop("_pairs_cache", None)  # moving may replace the tensors
        return super()._apply(*args, **kwargs)

    @staticmethod
    def _tensors(model: nn.Module) -> list[Tensor]:
        return [*model.parameters(), *model.buffers()]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> EMA:
        return super().train(False)

    def get_extra_state(self) -> dict[str, int]:
        return {"updates": self.updates}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.updates = int(state["updates"])
