# SDK worker image for running the pipelines on Flink or Dataflow (docs/scaling.md):
#   --environment_type=DOCKER --environment_config=IMAGE   (Flink / PortableRunner)
#   --sdk_container_image=IMAGE                            (Dataflow)
#
# CPU (default):
#   docker build -t tinybert-data:cpu .
# CUDA (the masked LM runs on the worker's GPU with --device auto|cuda):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t tinybert-data:cu128 .
#
# The base image is the official Beam Python SDK image of the Beam version CI tests (apache-beam==2.77.0 in
# constraints.txt): its ENTRYPOINT, /opt/apache/beam/boot, is what the runners start, so it is left as it is.
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}

# Where torch comes from: the CPU wheels, or a CUDA build (e.g. .../whl/cu126, .../whl/cu128).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_DISABLE_TELEMETRY=1

WORKDIR /opt/tinybert

# The project with the exact versions CI tests (constraints.txt), with torch's own index as an extra index: for the
# pin `torch==X` it offers `X+cpu` (or `X+cu128`), which PEP 440 ranks above PyPI's plain `X`, so the build chosen by
# TORCH_INDEX is the one installed. Workers unpickle our DoFns and import these packages from site-packages.
COPY pyproject.toml constraints.txt README.md ./
COPY augment/ augment/
COPY contract/ contract/
COPY corpus/ corpus/
COPY pipelines/ pipelines/
COPY distill/ distill/
RUN pip install -c constraints.txt --extra-index-url "${TORCH_INDEX}" . \
    && python -c "import apache_beam, torch, transformers, pipelines.augment.pipeline; print(apache_beam.__version__, torch.__version__)"
