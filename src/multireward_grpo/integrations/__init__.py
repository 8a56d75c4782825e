"""Adapters that run our estimators, conditioning and diagnostics inside other RL engines."""
