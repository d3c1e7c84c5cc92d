"""roar: a remove-and-retrain (ROAR) benchmark for saliency methods, built around FullGrad."""

__version__ = "0.1.0"
