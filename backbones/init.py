"""The paper's initialisation of a backbone's own parameters, and the options that choose it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ecbench.backbones.base import Backbone


def uniform_init(backbone: Backbone, init_range: float, *, layernorm_identity: bool = True) -> None:
    """Draw every encoder parameter from U(-r, r), r = 0.1 in the paper (Section 6.1.3).

    The item table is left to its compressor. With `layernorm_identity`, LayerNorm modules are
    reset to the identity instead (gain 1, bias 0).
    """
    table = {id(m) for m in backbone.compressor.modules()}
    with torch.no_grad():
        for module in backbone.modules():
            if id(module) in table:
                continue
            if layernorm_identity and isinstance(module, nn.LayerNorm):
                module.reset_parameters()
                continue
            for p in module.parameters(recurse=False):
                p.uniform_(-init_range, init_range)


@dataclass
class InitOptions:
    """Options shared by the baselines: `uniform` is the paper's U(-init_range, init_range) for
    every encoder parameter; `torch` keeps PyTorch's default initialisation."""

    weight_init: Literal["uniform", "torch"] = "uniform"
    init_range: float = 0.1

    def __post_init__(self) -> None:
        if self.weight_init not in ("uniform", "torch"):
            raise ValueError(f"weight_init must be uniform or torch, got {self.weight_init!r}")
        if not self.init_range > 0:
            raise ValueError(f"init_range must be positive, got {self.init_range}")

    def apply(self, backbone: Backbone) -> None:
        if self.weight_init == "uniform":
            uniform_init(backbone, self.init_range)
