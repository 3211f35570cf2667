# One-shot trainer: runs `make artifacts` (synthetic data -> prepare -> train -> evaluate
# -> export), exactly what `make run` does before it serves.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
# Every package of pyproject.toml's [tool.setuptools.packages.find] (a test checks it).
COPY bundle ./bundle
COPY cli ./cli
COPY loadtest ./loadtest
COPY models ./models
COPY service ./service
COPY training ./training
# torch first, pinned, from the CPU-only index: the default index's Linux wheel pulls
# gigabytes of CUDA libraries this image never uses. The project then finds it installed.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL" \
    && /opt/venv/bin/pip install -e '.[cpu,train]' && touch /opt/venv/.installed-run
CMD ["make", "artifacts", "VENV=/opt/venv", "ARTIFACTS=/artifacts"]
