# One image for agentgym's services (policy server, eval, trainer): the same setup script as a developer machine.
FROM python:3.11-slim-bookworm
RUN apt-get update -qq && apt-get install -y -qq make git && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/agentgym
COPY . .
ENV VENV=/opt/venv PYTHON=python3.11 PATH=/opt/venv/bin:$PATH
RUN bash scripts/setup.sh
