# SDK worker image for running the pipelines on Flink/Dataflow (--sdk_container_image).
ARG BEAM_VERSION=2.77.0
FROM apache/beam_python3.11_sdk:${BEAM_VERSION}
WORKDIR /opt/tinybert
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY augment/ augment/
COPY pipelines/ pipelines/
COPY distill/ distill/
ENV PYTHONPATH=/opt/tinybert
