"""Classification by label denoising (task.py), its config section (config.py)."""
