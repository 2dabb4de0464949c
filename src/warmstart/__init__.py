"""warmstart: where a network starts — weight initialization and transfer learning."""

__version__ = "0.1.0"
