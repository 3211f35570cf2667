# The online service: FastAPI + ONNX Runtime (CPU). No torch in this image.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
COPY models ./models
COPY training ./training
COPY service ./service
RUN python -m pip install --upgrade pip && python -m pip install .
ENV NEXTCLICK_ARTIFACTS_DIR=/artifacts
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
# The same command as `make run`'s last step.
CMD ["nextclick", "serve", "--artifacts", "/artifacts", "--host", "0.0.0.0", "--port", "8000"]
