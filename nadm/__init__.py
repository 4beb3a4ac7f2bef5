"""NADM: Noise-Aware Diffusion Model for landscape-painting video generation."""

__version__ = "0.1.0"
