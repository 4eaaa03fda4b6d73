# The orchestrator itself in a container (docker-compose.yml at the repository's root runs it).
# It drives the host's Docker engine through the mounted socket; the agent image
# (`clawpen image build`) is built on the host as usual.
FROM python:3.11-slim
COPY pyproject.toml README.md /opt/clawpen/
COPY src /opt/clawpen/src
RUN pip install --no-cache-dir /opt/clawpen && rm -rf /opt/clawpen
ENTRYPOINT ["clawpen"]
