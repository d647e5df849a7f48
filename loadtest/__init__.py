"""loadtest: MLPerf-style load testing for Triton Inference Server."""

import os

# gRPC's C core logs every failed TLS handshake at INFO on stderr; a failed connection is already
# one clear line of ours. Read once, when grpc is first imported, so it is set here (a value the
# user set wins).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
