"""lt_lightning: PyTorch Lightning plugins for long-tailed image classification."""

__version__ = "0.1.0"
