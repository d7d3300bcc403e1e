"""Offline training jobs and the registry of versioned checkpoints. Imports jepa_model, never service."""
