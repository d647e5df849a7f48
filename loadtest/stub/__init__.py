"""A zero-compute KServe-v2 server (HTTP and gRPC) that answers any model at once.

It is the roofline for the client alone: whatever rate loadtest cannot hold against it, it cannot
hold against any server. It is also a fast, real-network fixture for tests. Model configs come from
a model repository when the name is there, else a default 16-float MLP shape; outputs are zeros
shaped for a batch of one. Nothing is computed and no input is checked.
"""
