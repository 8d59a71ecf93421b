"""The SAE architecture registry: name -> (its config class, its SAE class). A leaf: each architecture's
module registers itself with `@register(name, ItsConfig)` when it is imported, and this module imports
none of them; `architectures` imports every built-in one (what `build_sae` and `config_from_dict` read).
A new architecture is one module under saes/ with a registered class, added to `architectures`."""
from __future__ import annotations

from typing import NamedTuple


class Architecture(NamedTuple):
    config: type   # the SAEConfig subclass
    model: type    # the SparseAutoencoder subclass



ARCHITECTURES: dict[str, Architecture] = {}


def register(name: str, config: type):
    """Class decorator: make `build_sae` and `config_from_dict` know the architecture `name`,
    built by the decorated class from a `config` (an SAEConfig subclass)."""

    def deco(cls):
        ARCHITECTURES[name] = Architecture(config, cls)
        cls.architecture = name
        return cls

    return deco



def architecture(name: str) -> Architecture:
    """The registered architecture `name`; a one-line ValueError naming the registered ones."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown SAE architecture {name!r}; available: {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name]
