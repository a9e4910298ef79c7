"""Suite-wide settings: nothing imported by a test may reach for the internet."""

import os

# ``import litellm`` downloads a model cost map (three tries with backoff) unless told to use its own.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
