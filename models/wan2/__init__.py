"""The ``wan-animate-2`` engine: diffusers' Wan-Animate-2 driven by the raw camera frames."""
