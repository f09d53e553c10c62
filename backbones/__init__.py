"""Session encoders that take any compressor as their item table, and their registry.

Third-party backbones register through the ``ecbench.backbones`` entry-point group.
"""

from ecbench import compressors
from ecbench.compressors import Compressor, Registry

from ecbench.backbones.base import Backbone
from ecbench.backbones.gru4rec import GRU4Rec, GRU4RecConfig
from ecbench.backbones.narm import NARM, NARMConfig
from ecbench.backbones.sasrec import SASRec, SASRecConfig
from ecbench.backbones.srgnn import SRGNN, SRGNNConfig
from ecbench.backbones.stamp import STAMP, STAMPConfig

registry: Registry[Backbone] = Registry("backbone", "ecbench.backbones")
registry.share_command_line_with(compressors.registry)  # one command line takes both kinds


@registry.register("sasrec", config=SASRecConfig,
                   description="SASRec with the soft-attention readout (Eq. 2-3)")
def build_sasrec(config: SASRecConfig, *, compressor: Compressor, max_len: int) -> SASRec:
    return SASRec(compressor, config, max_len)


# The paper's baselines (Section 6.1.2); none of them limits the session length.

@registry.register("gru4rec", config=GRU4RecConfig,
                   description="GRU4Rec: a GRU's last state (Hidasi et al. 2016)")
def build_gru4rec(config: GRU4RecConfig, *, compressor: Compressor, max_len: int) -> GRU4Rec:
    return GRU4Rec(compressor, config, max_len)


@registry.register("narm", config=NARMConfig,
                   description="NARM: GRU global + attention local encoders, bilinear (Li et al. 2017)")
def build_narm(config: NARMConfig, *, compressor: Compressor, max_len: int) -> NARM:
    return NARM(compressor, config, max_len)


@registry.register("stamp", config=STAMPConfig,
                   description="STAMP: attention and MLP cells, trilinear (Liu et al. 2018)")
def build_stamp(config: STAMPConfig, *, compressor: Compressor, max_len: int) -> STAMP:
    return STAMP(compressor, config)


@registry.register("srgnn", config=SRGNNConfig,
                   description="SR-GNN: gated GNN on session graphs, attention (Wu et al. 2019)")
def build_srgnn(config: SRGNNConfig, *, compressor: Compressor, max_len: int) -> SRGNN:
    return SRGNN(compressor, config)


def build(name: str, config=None, **context) -> Backbone:
    return registry.build(name, config, **context)


__all__ = ["Backbone", "SASRec", "SASRecConfig", "GRU4Rec", "GRU4RecConfig", "NARM", "NARMConfig",
           "STAMP", "STAMPConfig", "SRGNN", "SRGNNConfig", "registry", "build"]
