#!/bin/sh
# Entry point of the triton services in docker-compose.yml: tritonserver on the suite's repository
# (/models) and, once a TensorRT plan has been built there, on /models_trt too (a second
# --model-repository). Only models whose weights exist are loaded (explicit model control):
# bert_large's config is committed but its 1.3 GB model.onnx is built only on request, and a
# model without weights would stop Triton at start-up. Extra arguments go to tritonserver (the
# GPU service adds --model-config-name=gpu). LOADTEST_REPOSITORIES and LOADTEST_TRITONSERVER
# exist for tests/test_compose.py, which runs this script with a stand-in server.
set -eu
repositories=${LOADTEST_REPOSITORIES:-/models /models_trt}
server=${LOADTEST_TRITONSERVER:-tritonserver}
set -- --model-control-mode=explicit "$@"
first=1
for repo in $repositories; do
  used=""
  if [ -d "$repo" ]; then
    for dir in "$repo"/*/; do
      [ -d "$dir" ] || continue
      for file in "$dir"[0-9]*/model.onnx "$dir"[0-9]*/model.plan; do
        if [ -f "$file" ]; then
          set -- "$@" "--load-model=$(basename "$dir")"
          used=1
          break
        fi
      done
    done
  fi
  # the first repository always (tritonserver needs one); the others only when they serve a model
  if [ -n "$first" ] || [ -n "$used" ]; then
    set -- "$@" "--model-repository=$repo"
  fi
  first=""
done
echo "serve.sh: $server $*" >&2
exec "$server" "$@"
