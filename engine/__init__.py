"""Training engine: config, trainer, checkpoints, distributed helpers, logging."""
