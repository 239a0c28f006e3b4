"""`python -m scripts.lib.model_presets`: print the model MODEL and BASE_MODEL choose (the setup job downloads it).

An unknown MODEL, or MODEL and BASE_MODEL naming different presets' models, prints why and exits 2.
"""

import os
import sys

from scripts.lib.model_presets import PresetError, choose

try:
    print(choose(os.environ.get("MODEL"), os.environ.get("BASE_MODEL"))[1])
except PresetError as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
