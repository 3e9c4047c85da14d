"""Builders of the offline suite's local task data (fixed seeds; `python -m evalsuite.builders`)."""
