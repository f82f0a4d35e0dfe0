"""Block workers: train ONE DiffusionBlocks block (its own weights and optimiser state only).

`train_block.py` is the loop and imports no Ray; `ray_entry.py` is the one Ray-aware module.
"""
