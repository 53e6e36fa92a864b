#!/usr/bin/env python3
"""A small KServe v2 (Open Inference Protocol) gRPC server for the ``remote`` backend's tests:
the answers a real server should never give, and a few it may give, on purpose.

It implements ``inference.GRPCInferenceService`` with grpcio, using the protocol's generated
messages shipped in ``tritonclient`` (run it with the Python of ``.venv-triton``). Every model
has the ports of the act_tiny fixture (``state`` FP32 [1, 6], ``images`` FP32 [1, 3, 64, 64] ->
``action`` FP32 [1, 10, 6]); what it answers depends on the model's name:

  echo            action[0, k, j] = state[0, j] + 0.001 * k, as raw little-endian bytes
  typed           the same values as typed contents (fp32_contents), no raw buffers
  slow_echo       echo after ``--delay-ms`` (default 400)
  missing_output  answers an output named ``other`` instead of ``action``
  wrong_size      raw ``action`` of 9 x 6 values for the shape [1, 10, 6]
  wrong_shape     ``action`` with shape [1, 9, 6] (and the matching bytes)
  nan             echo with a NaN at flat index 7
  unready         ModelReady answers false
  bytes_state     declares ``state`` as BYTES (a datatype no robot-side tensor converts to)
  internal        ModelInfer fails with INTERNAL

Unknown models get NOT_FOUND. Prints ``READY {json}`` (``grpc_port``) once listening and
``INFER <model> <request id>`` when an inference request arrives; stops on SIGINT / SIGTERM or
when its parent process exits. With ``--tls CERT KEY`` it serves TLS.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pbg

MODELS = {"echo", "typed", "slow_echo", "missing_output", "wrong_size", "wrong_shape", "nan",
          "unready", "internal", "bytes_state"}
INPUTS = [("state", [1, 6]), ("images", [1, 3, 64, 64])]
OUTPUT = ("action", [1, 10, 6])


def tensor_meta(name, shape, datatype="FP32"):
    return pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=shape)


class Service(pbg.GRPCInferenceServiceServicer):
    def __init__(self, delay_s: float):
        self.delay_s = delay_s

    def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=True)

    def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name="kserve_peer", version="1")

    def _known(self, name, context) -> bool:
        if name not in MODELS:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Request for unknown model: '{name}' is not found")
        return True

    def ModelReady(self, request, context):
        self._known(request.name, context)
        return pb.ModelReadyResponse(ready=request.name != "unready")

    def ModelMetadata(self, request, context):
        self._known(request.name, context)
        return pb.ModelMetadataResponse(
            name=request.name, versions=["1"], platform="kserve_peer",
            inputs=[tensor_meta(n, s, "BYTES" if (request.name, n) == ("bytes_state", "state") else "FP32")
                    for n, s in INPUTS],
            outputs=[tensor_meta(*OUTPUT)])

    def ModelInfer(self, request, context):
        name = request.model_name
        self._known(name, context)
        print(f"INFER {name} {request.id}", flush=True)
        if name == "internal":
            context.abort(grpc.StatusCode.INTERNAL, "the model failed on purpose")
        if name == "slow_echo":
            time.sleep(self.delay_s)
        idx = [i.name for i in request.inputs].index("state")
        state = np.frombuffer(request.raw_input_contents[idx], dtype="<f4").reshape(1, 6)
        action = (state[:, None, :] + 0.001 * np.arange(10, dtype=np.float32)[None, :, None])
        action = action.astype("<f4")
        shape = list(OUTPUT[1])
        out_name = OUTPUT[0]
        if name == "missing_output":
            out_name = "other"
        elif name == "wrong_size":
            action = action[:, :9, :]
        elif name == "wrong_shape":
            action = action[:, :9, :]
            shape = [1, 9, 6]
        elif name == "nan":
            action.reshape(-1)[7] = np.nan
        resp = pb.ModelInferResponse(model_name=name, model_version="1", id=request.id)
        out = resp.outputs.add(name=out_name, datatype="FP32", shape=shape)
        if name == "typed":
            out.contents.fp32_contents.extend(action.reshape(-1).tolist())
        else:
            resp.raw_output_contents.append(action.tobytes())
        return resp


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=400.0)
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    args = ap.parse_args()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 1 << 30)])
    pbg.add_GRPCInferenceServiceServicer_to_server(Service(args.delay_ms / 1e3), server)
    if args.tls:
        with open(args.tls[0], "rb") as c, open(args.tls[1], "rb") as k:
            creds = grpc.ssl_server_credentials([(k.read(), c.read())])
        port = server.add_secure_port(f"127.0.0.1:{args.port}", creds)
    else:
        port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    parent = os.getppid()
    print("READY " + json.dumps({"grpc_port": port, "pid": os.getpid()}), flush=True)
    while not stop.wait(0.5):
        if os.getppid() != parent:
            break
    server.stop(grace=0.5).wait()
    print("STOPPED", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
