"""Run artefacts: collect and assemble blocks, sample, pictures, report, evaluation. No Redis, no Ray."""
