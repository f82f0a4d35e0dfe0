"""Block workers: train ONE DiffusionBlocks block (its own weights and optimiser state only).

`train_block.py` is the loop and imports no Ray. Under Ray: `ray_entry.py` (the job actors the coordinator
starts), `ray_block.py` (what training needs in a Ray process), `ray_train.py` (a data-parallel block through Ray
Train), `checkpoints.py` (a block actor's checkpoints).
"""
