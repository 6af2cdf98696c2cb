"""Stage 6, model: SigLIP2 checkpoints (build, load, embed) and the training job (`training/`)."""
