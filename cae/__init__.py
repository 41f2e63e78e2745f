"""cae: fingerprinting deep neural networks with conferrable adversarial examples.

Reference implementation of Lukas, Zhang and Kerschbaum, "Deep Neural Network
Fingerprinting by Conferrable Adversarial Examples" (ICLR 2021), in Keras 3 with the
Adversarial Robustness Toolbox.
"""

import os

__version__ = "0.1.0"

# TensorFlow's oneDNN kernels are off by default on some x86 CPUs; on the 2-core AMD
# machines this package is developed on they halve training time. Set before
# TensorFlow is imported; an explicit setting by the user wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
