"""MD4 masked-diffusion language modelling (task.py), its config section (config.py)."""
