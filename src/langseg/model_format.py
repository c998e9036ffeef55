"""The file names of a saved langseg model folder (``model.safetensors`` + ``config.json`` + ``README.md``).

Imports nothing, so modules that must not import torch (the registry in :mod:`langseg.hub`, the
command line's start-up) use the same names as :mod:`langseg.models.checkpoint`, which writes them.
"""

FORMAT = "langseg-v1"  # the "format" entry of config.json and of the safetensors metadata
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
