# The online service: FastAPI + ONNX Runtime (CPU). No torch in this image.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
# Every package of pyproject.toml's [tool.setuptools.packages.find] (a test checks it).
COPY bundle ./bundle
COPY cli ./cli
COPY loadtest ./loadtest
COPY models ./models
COPY service ./service
COPY training ./training
RUN python -m pip install --upgrade pip && python -m pip install '.[cpu]'
# Threads, explicitly: one ONNX Runtime thread per graph run and a pool of 4 runs at once
# (concurrent requests scale over the pool, not inside one run); OpenMP held to 1 so no
# library spawns a thread per core of the host.
ENV NEXTCLICK_ARTIFACTS_DIR=/artifacts \
    OMP_NUM_THREADS=1 \
    NEXTCLICK_INTRA_OP_THREADS=1 \
    NEXTCLICK_INFERENCE_THREADS=4
EXPOSE 8000
# Ready = Redis accepts writes and a model is loaded (the same check as the compose file).
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"
# The same command as `make run`'s last step. On 0.0.0.0 it needs NEXTCLICK_API_KEYS, or
# NEXTCLICK_ALLOW_INSECURE=true for a demo (docs/security.md).
CMD ["nextclick", "serve", "--artifacts", "/artifacts", "--host", "0.0.0.0", "--port", "8000"]
