"""cae: fingerprinting deep neural networks with conferrable adversarial examples.

Reference implementation of Lukas, Zhang and Kerschbaum, "Deep Neural Network
Fingerprinting by Conferrable Adversarial Examples" (ICLR 2021), in Keras 3 with the
Adversarial Robustness Toolbox.
"""

__version__ = "0.1.0"
