# The online service on CUDA: onnxruntime-gpu instead of onnxruntime (they share one
# import name, so exactly one of them is installed).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /app
COPY pyproject.toml README.md Makefile ./
# Every package of pyproject.toml's [tool.setuptools.packages.find] (a test checks it).
COPY bundle ./bundle
COPY cli ./cli
COPY loadtest ./loadtest
COPY models ./models
COPY service ./service
COPY training ./training
# [gpu] brings onnxruntime-gpu and nothing brings the CPU onnxruntime (a test checks it).
RUN pip install --upgrade pip && pip install '.[gpu]'
# Threads, explicitly (as the CPU image): the GPU runs the graphs; CPU threads only feed it.
ENV NEXTCLICK_ARTIFACTS_DIR=/artifacts \
    NEXTCLICK_PROVIDERS='["CUDAExecutionProvider","CPUExecutionProvider"]' \
    OMP_NUM_THREADS=1 \
    NEXTCLICK_INTRA_OP_THREADS=1 \
    NEXTCLICK_INFERENCE_THREADS=4
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=2).status == 200 else 1)"
# On 0.0.0.0 it needs NEXTCLICK_API_KEYS, or NEXTCLICK_ALLOW_INSECURE=true for a demo.
CMD ["nextclick", "serve", "--artifacts", "/artifacts", "--host", "0.0.0.0", "--port", "8000"]
