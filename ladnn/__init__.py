"""LA-DNN reproduction: lesion-attention deep neural networks for COVID-19 CT (Liu et al., KDD 2020).

Research software, not a medical device.
"""
from ladnn.config import LESIONS, TASKS, Config

__all__ = ["LESIONS", "TASKS", "Config"]
__version__ = "0.1.0"
