# SDK worker image for running the pipelines on Flink or Dataflow (docs/scaling.md):
#   --environment_type=DOCKER --environment_config=IMAGE   (Flink / PortableRunner)
#   --sdk_container_image=IMAGE                            (Dataflow)
#
# CPU (default):
#   docker build -t tinybert-data:cpu .
# CUDA (the masked LM runs on the worker's GPU with --device auto|cuda):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t tinybert-data:cu128 .
#
# The base image is the official Beam Python SDK image of the pinned Beam version (apache-beam==2.77.0 in
# requirements.txt): its ENTRYPOINT, /opt/apache/beam/boot, is what the runners start, so it is left as it is.
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

# Where torch comes from: the CPU wheels, or a CUDA build (e.g. .../whl/cu126, .../whl/cu128).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_DISABLE_TELEMETRY=1

WORKDIR /opt/tinybert

# The pinned requirements, with torch's own index as an extra index: for the pin `torch==X` it offers `X+cpu` (or
# `X+cu128`), which PEP 440 ranks above PyPI's plain `X`, so the build chosen by TORCH_INDEX is the one installed.
COPY requirements.txt .
RUN pip install --extra-index-url "${TORCH_INDEX}" -r requirements.txt \
    && python -c "import apache_beam, torch, transformers; print(apache_beam.__version__, torch.__version__)"

# The project code: DoFns are unpickled on the workers and import these packages.
COPY augment/ augment/
COPY pipelines/ pipelines/
COPY distill/ distill/
COPY samples/ samples/
ENV PYTHONPATH=/opt/tinybert
