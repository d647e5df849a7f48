# The one-shot `models` service of docker-compose.yml: builds the benchmark suite's ONNX weights
# into the mounted model_repository/. Only what building needs is installed (no onnxruntime, no
# embedded Triton); the pins match pyproject.toml (tests/test_compose.py checks that they do).
FROM python:3.11-slim
RUN pip install --no-cache-dir \
        "numpy>=1.24,<2" \
        "onnx>=1.16,<1.23" \
        "tritonclient[grpc]==2.51.0" \
        "typer>=0.12" \
        "rich>=13"
WORKDIR /workspace
ENV PYTHONPATH=/workspace PYTHONDONTWRITEBYTECODE=1
ENTRYPOINT ["python", "-m", "loadtest.models"]
CMD ["build", "--repository", "/workspace/model_repository"]
