"""Plain torch models (no Hydra, no Lightning): usable outside the framework."""
