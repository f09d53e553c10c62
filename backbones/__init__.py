"""Session encoders that take any compressor as their item table, and their registry.

Third-party backbones register through the ``ecbench.backbones`` entry-point group.
"""

from compressors import Compressor, Registry

from backbones.base import Backbone
from backbones.sasrec import SASRec, SASRecConfig

registry: Registry[Backbone] = Registry("backbone", "ecbench.backbones")


@registry.register("sasrec", config=SASRecConfig,
                   description="SASRec with the soft-attention readout (Eq. 2-3)")
def build_sasrec(config: SASRecConfig, *, compressor: Compressor, max_len: int) -> SASRec:
    return SASRec(compressor, config, max_len)


def build(name: str, config=None, **context) -> Backbone:
    return registry.build(name, config, **context)


__all__ = ["Backbone", "SASRec", "SASRecConfig", "registry", "build"]
