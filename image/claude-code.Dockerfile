# The claude-code engine variant of the agent image: the agent image plus the Claude Agent SDK
# (whose wheel bundles the Claude Code CLI, a self-contained glibc binary: no node needed).
# Built by `clawpen image build` (src/clawpen/runtime/image.py, build_engine_image) FROM the agent image;
# the context is the SDK's site dir, prepared on the host and cached by the requirements' hash.
ARG BASE=clawpen-agent:latest
FROM ${BASE}

USER 0:0
COPY engine/ /opt/clawpen/engine/
RUN python3 -m compileall -q /opt/clawpen/engine || true

ENV PYTHONPATH=/opt/clawpen:/opt/clawpen/site:/opt/clawpen/engine \
    CLAWPEN_ENGINE=claude-code

USER 10001:10001
