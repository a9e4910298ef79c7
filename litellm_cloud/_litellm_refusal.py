"""Our own refusals skip LiteLLM's logging of proxy-side failures, installed once by ``gateway.build_gateway``.

When a pre-call hook of ours refuses a request (``fleet_busy``, ``rate_limited``, ``model_not_allowed``,
...), LiteLLM 1.103.7 answers it through ``ProxyLogging.post_call_failure_hook``, which first logs it as a
"proxy-only" error (``_handle_logging_proxy_only_error``) and only then runs every callback's
``async_post_call_failure_hook``, where our hooks record, settle and log the refusal. The proxy-only
logging fills the request's LiteLLM logging object, fires every callback's pre-call input hook, builds a
standard logging payload and awaits every callback's ``async_log_failure_event``
(``_dispatch_proxy_only_failure_handlers``), formats a traceback for a 5xx (``fleet_busy`` is a 503), and
starts a new ``threading.Thread`` per refusal to run the synchronous failure callbacks. A py-spy profile
(``--gil``) of a proxy answering nothing but ``rate_limited`` put 18% of its GIL time there (14% in the
event loop, 4% in the threads), the largest part of the failure path; under a Free flood of thousands
of refusals a second it slows every request the process serves (issue 16).

None of it is ours: no callback of ours logs on ``async_log_failure_event`` a refusal made before any
upstream call (``observability._hook`` records it in the post-call failure hook), LiteLLM's own
parallel-request limiter releases its slot in its post-call failure hook too (idempotently; that hook
still runs), and the rendered config names no LiteLLM logging integration. So for a ``GatewayError``
of ours (``_litellm.gateway_error_of``) ``skip_proxy_logging_of_refusals()`` makes that step return at
once; everything else in ``post_call_failure_hook`` runs as before (request status, alerting,
``_failure_fields_to_lift``, which gives our trace its start time and call type, and every callback's
failure hook, in order), so the client's answer, our metrics, trace and refusal log line are unchanged.

Only where the request already has its LiteLLM logging object (every refusal of a pre-call hook:
LiteLLM makes it before calling them). A refusal by our auth function comes before it, and there
LiteLLM's step also gives the request its call id and the start time and call type our trace reads:
it keeps going through LiteLLM unchanged, like every error that is not ours (upstream errors, LiteLLM's
own refusals). A LiteLLM logging integration added to the config by hand (``failure_callback``) no
longer sees our pre-call refusals: they are in our metrics, traces and refusal log.

**Guard.** The three functions of that path must refer to exactly the names measured on LiteLLM 1.103.7
(``_MEASURED``, nested code included) and the step keep its parameters; otherwise (an upgrade) nothing
is changed and an error is logged: refusals then cost what they cost before.
tests/core/test_litellm_refusal.py fails in that case, and checks through a real proxy that a refusal
of ours reaches no failure logger (nor its thread) while one that is not ours still does.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from typing import Any

from ._litellm import gateway_error_of
from ._litellm_speed import referenced_names

log = logging.getLogger("litellm_cloud.gateway")

_MARK = "_litellm_cloud_original"

#: The names each function of the path refers to, measured on LiteLLM 1.103.7.
_MEASURED: dict[str, frozenset[str]] = {
    "post_call_failure_hook": frozenset({
        "AlertType", "CustomLogger", "Exception", "HTTPException", "Logging",
        "_custom_logger_compatible_callbacks_literal", "_failure_fields_to_lift", "_handle_logging_proxy_only_error",
        "_is_client_error_exception", "_is_proxy_only_llm_api_error", "_provider_billed_the_failure", "_redact_string",
        "alert_types", "alerting_handler", "async_post_call_failure_hook", "asyncio", "baseline_cache_context",
        "callbacks", "cast", "create_task", "exception", "get", "get_custom_logger_compatible_class", "getattr",
        "invalidate_baseline_cache_estimate", "isinstance", "litellm", "litellm_core_utils", "litellm_logging",
        "llm_exceptions", "offload_token_count", "pop", "request_route", "str", "update", "update_request_status",
        "verbose_proxy_logger",
    }),
    "_handle_logging_proxy_only_error": frozenset({
        "CallTypes", "LITELLM_LOGGING_NO_UPSTREAM_LLM_CALL", "LiteLLMProxyRequestSetup", "LoggedLiteLLMParams",
        "Rules", "__annotations__", "_call_type_for_route", "_dispatch_proxy_only_failure_handlers", "acompletion",
        "aembedding", "atext_completion", "call_type", "datetime", "function_setup", "get",
        "get_sanitized_user_information_from_key", "isinstance", "items", "keys", "list", "litellm", "litellm._uuid",
        "model_call_details", "now", "pass_through", "pre_call", "setdefault", "str", "update",
        "update_environment_variables", "utils", "uuid", "uuid4", "value",
    }),
    "_dispatch_proxy_only_failure_handlers": frozenset({
        "Thread", "async_failure_handler", "failure_handler", "format_exc", "is_expected_client_error", "litellm",
        "log_client_error_tracebacks", "start", "threading", "traceback",
    }),
}  # fmt: skip
_PARAMETERS = ("self", "request_data", "user_api_key_dict", "route", "original_exception")


def _function(cls: type, name: str) -> Any:
    found = inspect.getattr_static(cls, name, None)
    found = getattr(found, "__func__", found)  # a staticmethod's function
    return getattr(found, _MARK, found)


def changed_functions(measured: Mapping[str, frozenset[str]] | None = None) -> list[str]:
    """The functions of LiteLLM's proxy-only failure logging that no longer look as ``measured``
    (default: ``_MEASURED``, read at each call)."""
    from litellm.proxy.utils import ProxyLogging

    expected = _MEASURED if measured is None else measured
    changed = [name for name, names in expected.items() if referenced_names(_function(ProxyLogging, name)) != names]
    step = _function(ProxyLogging, "_handle_logging_proxy_only_error")
    if not inspect.iscoroutinefunction(step) or tuple(inspect.signature(step).parameters) != _PARAMETERS:
        changed.append("_handle_logging_proxy_only_error (parameters)")
    return changed


def skip_proxy_logging_of_refusals(measured: Mapping[str, frozenset[str]] | None = None) -> bool:
    """Skip LiteLLM's proxy-only failure logging for our pre-call refusals (module docstring); idempotent.

    True if active; False (an error logged, nothing changed) when LiteLLM's code is not what was measured.
    """
    from litellm.litellm_core_utils.litellm_logging import Logging
    from litellm.proxy.utils import ProxyLogging

    changed = changed_functions(measured)
    if changed:
        log.error(
            "LiteLLM's failure logging changed (ProxyLogging.%s): each refusal of ours keeps its full cost "
            "(a failure-logging thread each)",
            ", ".join(changed),
        )
        return False
    current = ProxyLogging._handle_logging_proxy_only_error
    if getattr(current, _MARK, None) is not None:
        return True  # installed already
    original = current

    async def _handle_logging_proxy_only_error(
        self: Any,
        request_data: dict[str, Any],
        user_api_key_dict: Any,
        route: str | None = None,
        original_exception: Exception | None = None,
    ) -> None:
        if gateway_error_of(original_exception) is not None and isinstance(
            request_data.get("litellm_logging_obj"), Logging
        ):
            return  # ours, refused by a pre-call hook: our failure hooks record it
        await original(
            self,
            request_data=request_data,
            user_api_key_dict=user_api_key_dict,
            route=route,
            original_exception=original_exception,
        )

    setattr(_handle_logging_proxy_only_error, _MARK, original)
    ProxyLogging._handle_logging_proxy_only_error = _handle_logging_proxy_only_error  # type: ignore[method-assign]
    return True
