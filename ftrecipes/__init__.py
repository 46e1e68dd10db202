"""ftrecipes: declarative fine-tuning recipes, composed by Hydra and validated before launch.

Importing this package is cheap on purpose: torch, transformers and friends are imported only by
the stages that need them, so validation and planning stay fast.
"""

__version__ = "0.1.0"
