"""denoise: clean noisy images with a UNet, make noisy data, train your own denoiser.

Importing the package is cheap; torch is imported by the submodules that need it.
"""

__version__ = "0.1.0"
