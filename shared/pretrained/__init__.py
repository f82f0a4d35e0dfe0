"""Starting blocks from a trained network (`init.checkpoint`; docs/pretrained.md).

`resolve_init(config)` runs once, when a run is submitted (with the data's resolution, confined like a data source
for a service caller): it opens the checkpoint, records its format, prediction, sha256 and numerical conventions in
the run's config, and checks that every tensor of every planned block has its counterpart with the right shape,
naming the tensor otherwise, before anything starts. `block_init_state(config, block)` is what a worker loads into
its fresh block: its slice of the layers and its own copies of the rest, read lazily from the source.
"""

from shared.pretrained.config import InitConfig
from shared.pretrained.mapping import source_layers
from shared.pretrained.resolve import (
    IMPORTS,
    block_init_state,
    describe,
    init_sources,
    net_conventions,
    plan_init,
    resolve_init,
)
from shared.pretrained.sources import InitError

__all__ = [
    "IMPORTS",
    "InitConfig",
    "InitError",
    "block_init_state",
    "describe",
    "init_sources",
    "net_conventions",
    "plan_init",
    "resolve_init",
    "source_layers",
]
