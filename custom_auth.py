"""The module LiteLLM loads: ``general_settings.custom_auth`` and ``litellm_settings.callbacks``.

Deliberately empty of logic and state (LiteLLM may execute this file once per reference): it hands over
to ``litellm_cloud.gateway``, which builds the gateway once per process.
"""

from litellm_cloud.gateway import gateway

_gateway = gateway()

user_api_key_auth = _gateway.auth.user_api_key_auth
access_hook = _gateway.access_hook
fleet_hook = _gateway.fleet_hook
limits_hook = _gateway.limits_hook
observability_hook = _gateway.observability_hook
