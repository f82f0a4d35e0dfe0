"""DiffusionBlocks core: noise, partition, preconditioning, model, sampler, checkpoint format, config.

This package never imports ray, redis or prometheus_client (tests/test_layering.py checks it), so the
coordinator, the workers and offline tools can all use it.
"""
