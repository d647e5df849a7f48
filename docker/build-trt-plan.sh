#!/bin/sh
# The `tensorrt-plan` service (profile `tensorrt`) of docker-compose.yml: trtexec turns the suite's
# resnet50 ONNX into model_repository_trt/resnet50_trt/1/model.plan (FP16, batch 1..32 = the
# config's max_batch_size), which the GPU triton service then serves from its second
# --model-repository. A plan is specific to the GPU and TensorRT version that built it, so it is
# built on the serving machine, never committed. Untested here: no GPU and no Docker.
set -eu
onnx=/models/resnet50/1/model.onnx
out=/models_trt/resnet50_trt/1
if [ ! -f "$onnx" ]; then
  echo "build-trt-plan.sh: $onnx is missing; build it first: docker compose run --rm models" >&2
  exit 1
fi
mkdir -p "$out"
trtexec=$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)
exec "$trtexec" --onnx="$onnx" --saveEngine="$out/model.plan" --fp16 \
  --minShapes=input:1x3x224x224 --optShapes=input:16x3x224x224 --maxShapes=input:32x3x224x224
