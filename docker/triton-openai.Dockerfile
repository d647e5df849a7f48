# The `triton-openai` service of docker-compose.yml: Triton's OpenAI-compatible front end
# (python/openai/openai_frontend/main.py; /v1/completions, /v1/chat/completions, /v1/models on
# port 9000). Every Triton server image since 24.12 (2.53.0) ships it in
# /opt/tritonserver/python/openai with its requirements installed (build.py), and `usage` with
# stream_options.include_usage since 2.60.0; 26.07 is 2.71.0 (build.py's version map). Its
# tokenizer module imports transformers, which those requirements do not list: installed here.
# Never built or run where it was written (no Docker engine there).
FROM nvcr.io/nvidia/tritonserver:26.07-py3
RUN pip3 install --no-cache-dir "transformers==4.57.6"
WORKDIR /opt/tritonserver/python/openai
ENTRYPOINT ["python3", "openai_frontend/main.py"]
