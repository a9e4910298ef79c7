# The LiteLLM proxy with litellm-cloud on top: LiteLLM's official image, pinned to the same version as
# pyproject's litellm[proxy] pin (tests/deploy checks that this ARG, the compose build arg and the pin
# agree), plus our package and the files the proxy reads from /app. Built by docker-compose.yml.
ARG LITELLM_VERSION=1.103.7
FROM ghcr.io/berriai/litellm:main-v${LITELLM_VERSION}
ARG LITELLM_VERSION

USER root
WORKDIR /app

# Our package only: LiteLLM and everything it needs (httpx, pydantic, PyYAML, redis) are the image's
# own, at the versions LiteLLM was released with. --ignore-requires-python: the image's Python may be
# newer than the one our pyproject names (the tests run on 3.11). The build fails if the image does not
# carry the LiteLLM version we pin, or if our gateway cannot be imported next to it.
COPY pyproject.toml custom_auth.py /tmp/litellm-cloud/
COPY litellm_cloud /tmp/litellm-cloud/litellm_cloud
RUN python -m pip install --no-cache-dir --no-deps --ignore-requires-python /tmp/litellm-cloud \
 && rm -rf /tmp/litellm-cloud \
 && python -c "import importlib.metadata as m, sys; v = m.version('litellm'); sys.exit(None if v == '${LITELLM_VERSION}' else 'image has litellm ' + v + ', expected ${LITELLM_VERSION}')" \
 && LITELLM_LOCAL_MODEL_COST_MAP=True python -c "import litellm_cloud.gateway, litellm_cloud.cli, litellm_cloud.doctor"

# What the proxy reads at start (docker-compose.yml mounts the operator-edited ones over these).
COPY custom_auth.py config.yaml config-local.yaml tiers.yaml fleet.yaml /app/

EXPOSE 4000/tcp
# litellm_cloud/proxy.py: the command the tests run on the host, with the container's config and address.
ENTRYPOINT ["litellm-cloud"]
CMD ["proxy", "--config", "/app/config.yaml", "--host", "0.0.0.0", "--port", "4000"]
