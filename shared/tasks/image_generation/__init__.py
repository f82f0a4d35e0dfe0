"""Class-conditional image generation: the paper's image experiments (task.py)."""
