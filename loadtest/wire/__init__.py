"""Wire: the protocol libraries both ends speak, below the targets (clients) and the stub (server).

HTTP/2 framing and flow control (`http2.py`, shared by the gRPC client and the stub's gRPC
server), the lean unary gRPC client with gRPC's framing and status codes (`grpc_wire.py`), and
the HTTP/1.1 keep-alive pool (`http_wire.py`). They know bytes, sockets and status codes, never
a model, a sample or a `Target`: those are targets/'s, which builds its Triton targets on them.
"""
