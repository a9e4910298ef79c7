"""One adaptation of LiteLLM's auth error path, so every refusal keeps its stable ``code``.

LiteLLM refuses some request fields (``api_base``, ``user_config``, ``model_list``, ...) in its own
``pre_db_read_auth_checks``, before our auth function runs. Our access hook's failure hook replaces that
error, but LiteLLM only accepts an ``HTTPException`` as a replacement and then rebuilds it as a plain
``ProxyException`` whose ``code`` is the HTTP status (``"400"``), losing ours (``invalid_request``).

``install()`` wraps ``litellm.proxy.auth.auth_exception_handler._as_proxy_exception`` (measured on
LiteLLM 1.103.7; called by name, so rebinding the module attribute takes effect) so that our own
``GatewayProxyException`` passes through unchanged and LiteLLM's "Rejected Request" ``ValueError``
becomes our ``400 invalid_request`` (also without a key, where no failure hook runs); every other
exception is converted as before.
If a LiteLLM upgrade removes that function or stops calling it by name, ``install()`` logs an error and changes nothing: those
refusals then answer code ``"400"`` (tests/auth/test_proxy_auth.py fails and says so).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .._edge import GatewayProxyException, to_proxy_exception

log = logging.getLogger("litellm_cloud.auth")

_MARK = "_litellm_cloud_keeps_gateway_errors"


def install() -> bool:
    """Make LiteLLM's auth error path keep our ``GatewayProxyException``; idempotent. True if active."""
    try:
        from litellm.proxy.auth import auth_exception_handler as handler
    except ImportError:  # pragma: no cover - LiteLLM without its proxy extras
        return False
    original: Callable[[Exception], Any] | None = getattr(handler, "_as_proxy_exception", None)
    caller = getattr(getattr(handler, "UserAPIKeyAuthExceptionHandler", None), "_handle_authentication_error", None)
    # Rebinding the module attribute only works while the caller looks the function up by that name.
    looked_up = "_as_proxy_exception" in getattr(getattr(caller, "__code__", None), "co_names", ())
    if original is None or not callable(original) or not looked_up:
        log.error(
            "LiteLLM's auth error path changed (auth_exception_handler._as_proxy_exception): refusals of "
            "api_base/user_config will answer code '400' instead of 'invalid_request'"
        )
        return False
    if getattr(original, _MARK, False):
        return True

    def _as_proxy_exception(e: Exception) -> Any:
        if isinstance(e, GatewayProxyException):
            return e
        from .hook import litellm_refusal  # late: hook imports this package's siblings

        refusal = litellm_refusal(e)
        if refusal is not None:
            # Without a key the failure hook never runs, and LiteLLM's own conversion of this ValueError
            # imports prisma (absent here): a 500 with a traceback (found by tests/api/test_fuzz.py).
            return to_proxy_exception(refusal)
        return original(e)

    setattr(_as_proxy_exception, _MARK, True)
    handler._as_proxy_exception = _as_proxy_exception  # type: ignore[attr-defined]
    return True
