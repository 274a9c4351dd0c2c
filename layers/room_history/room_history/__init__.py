"""Room history core: pure room rules, the Redis store, the prompt renderer and settings."""
