"""The coordinator: plans a run, keeps its state in Redis, dispatches block jobs to Ray, assembles the model."""
