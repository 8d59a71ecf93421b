"""Every built-in SAE architecture, registered (importing their modules registers them), and the two
functions that need them all: `config_from_dict` (a config from its saved fields, by its "architecture")
and `build_sae` (the SAE a config describes); `registered()` lists them all."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .base import SAEConfig, SparseAutoencoder
from .batchtopk import BatchTopKSAE
from .jumprelu import JumpReLUSAE
from .matryoshka import MatryoshkaBatchTopKSAE
from .registry import ARCHITECTURES, Architecture, architecture
from .relu import ReLUSAE
from .topk import TopKSAE

BUILT_IN = (TopKSAE, BatchTopKSAE, MatryoshkaBatchTopKSAE, JumpReLUSAE, ReLUSAE)  # each registered by its module


def registered() -> dict[str, Architecture]:
    """Every registered architecture by name: the built-in ones and any other module's imported so far."""
    return dict(ARCHITECTURES)


def config_from_dict(fields: Mapping[str, Any]) -> SAEConfig:
    """The config class registered for fields["architecture"] built from `fields`.

    Keys that class does not declare are ignored (a TrainConfig carries every architecture's
    knobs; a newer file may carry more), and the `extra` dict of configs saved before the
    typed configs is unpacked into them.
    """
    fields = dict(fields)
    legacy = fields.pop("extra", None) or {}
    config = architecture(str(fields.get("architecture", "topk"))).config
    names = {f.name for f in dataclasses.fields(config)}
    return config(**{k: v for k, v in {**legacy, **fields}.items() if k in names})


def build_sae(cfg: SAEConfig, device=None) -> SparseAutoencoder:
    """Instantiate the SAE class registered for cfg.architecture."""
    arch = architecture(cfg.architecture)
    if cfg.d_in is None:
        raise ValueError("the SAE config's d_in is None: fill it with the model's width first, "
                         "dataclasses.replace(cfg, d_in=layout.d_model(model)).")
    if not isinstance(cfg, arch.config):
        raise ValueError(f"architecture {cfg.architecture!r} takes a {arch.config.__name__}, got a "
                         f"{type(cfg).__name__}: build it with config_from_dict or {arch.config.__name__}(...).")
    return arch.model(cfg, device=device)

