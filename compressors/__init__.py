"""Item-embedding compressors and their registry.

    >>> from ecbench import compressors
    >>> table = compressors.build("full", num_items=101, dim=16)

Third-party compressors register through the ``ecbench.compressors`` entry-point group.
"""

from ecbench.compressors.base import (Compressor, InferenceForm, StorageReport, StoredTensor,
                                      held_index, smallest_unsigned_dtype, widened)
from ecbench.compressors.named_registry import (OptionClashError, Registry, RegistryEntry,
                                                UnknownEntryError)

registry: Registry[Compressor] = Registry("compressor", "ecbench.compressors")

# Built-ins register themselves on import.
from ecbench.compressors import (ccode, full, hashing, hybrid, mixed_dim, pq, pruned,  # noqa: E402,F401
                                 quantized, sttd, tt)


def build(name: str, config=None, **context) -> Compressor:
    """Build the compressor `name` with its config (defaults if None) for a table shape."""
    return registry.build(name, config, **context)


__all__ = ["Compressor", "InferenceForm", "StorageReport", "StoredTensor", "Registry",
           "RegistryEntry", "OptionClashError", "UnknownEntryError", "registry", "build",
           "smallest_unsigned_dtype", "held_index", "widened"]
