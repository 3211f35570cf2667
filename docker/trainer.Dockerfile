# One-shot trainer: runs `make artifacts` (synthetic data -> prepare -> train -> evaluate
# -> export), exactly what `make run` does before it serves.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY models ./models
COPY training ./training
COPY service ./service
# torch pinned and installed first (TORCH_PIP_ARGS can point pip at a CPU-only index).
ARG TORCH_PIP_ARGS=""
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install $TORCH_PIP_ARGS torch==2.13.0 \
    && /opt/venv/bin/pip install -e '.[train]' && touch /opt/venv/.installed
CMD ["make", "artifacts", "VENV=/opt/venv", "ARTIFACTS=/artifacts"]
