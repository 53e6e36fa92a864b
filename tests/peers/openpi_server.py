#!/usr/bin/env python3
"""An openpi policy server for the tests: openpi's WebSocket protocol, built on openpi_client's
own msgpack codec and the `websockets` library, running an ONNX model with ONNX Runtime.

It behaves as openpi's `serve_policy.py` does on the wire: the metadata first, then one answer
per observation (`actions` [H, D] and `server_timing`), a text frame with the traceback and a
close with code 1011 when the policy raises, `GET /healthz` answered 200.

The observation is an export's model inputs (`--schema export`: each input by its name,
without the batch dimension, float32) or one of openpi's robot schemas (`aloha`, `droid`,
`libero`), mapped onto the same model by `--schema-map` (JSON: model input -> observation
path, or a list of paths concatenated; `aloha` nests at `/`, `droid` and `libero` use the
paths as flat keys; images are converted to the model's layout and scale).

Faults, from request `--fault-after` on (0: every request): `traceback` (the policy raises),
`width` (one action column short), `nan`, `dtype` (int64 actions), `garbage` (bytes that are
not msgpack), `oversize` (a message above the client's bound), `hang` (never answers),
`close` (closes without answering).

With `--tls-cert` / `--tls-key` it serves `wss://` (TLS). Prints `READY {"port": N}` on
stdout once it listens; with `--log FILE`, one JSON line per
request (keys, dtypes, shapes, prompt).
"""

import argparse
import asyncio
import http
import json
import sys
import time
import traceback

import numpy as np
import onnxruntime as ort
import websockets
import websockets.asyncio.server as ws_server
from openpi_client import msgpack_numpy

FAULTS = ("none", "traceback", "width", "nan", "dtype", "garbage", "oversize", "hang", "close")


def describe(value):
    if isinstance(value, np.ndarray):
        return {"dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    return {"type": type(value).__name__, "value": value if isinstance(value, (str, int, float)) else None}


def lookup(obs, path, nested):
    """`path` nested (`images/cam_high`: ALOHA's schema) or as a flat key (DROID's
    `observation/joint_position`), as the schema says; a missing key raises KeyError naming it,
    as openpi's input transforms do."""
    if not nested:
        if path not in obs:
            raise KeyError(path)
        return obs[path]
    node = obs
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node


class Policy:
    def __init__(self, model, schema, schema_map):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        self.output = next((n for n in ("action", "actions") if n in outputs), outputs[0])
        self.schema = schema
        self.schema_map = schema_map

    def feed(self, name, value, shape):
        a = np.asarray(value)
        if a.dtype == np.uint8:
            a = a.astype(np.float32) / 255.0
        a = a.astype(np.float32)
        want = [d if isinstance(d, int) else None for d in shape[1:]]
        if a.ndim == 3 and len(want) == 3 and want[0] in (1, 3) and a.shape[-1] == want[0] and a.shape[0] != want[0]:
            a = np.transpose(a, (2, 0, 1))  # HWC -> CHW
        return a[None]

    def infer(self, obs):
        feeds = {}
        for i in self.inputs:
            if self.schema == "export":
                value = lookup(obs, i.name, nested=False)
            else:
                # One observation path, or a list of them concatenated (DROID's joint and
                # gripper positions into one state).
                paths = self.schema_map[i.name]
                paths = paths if isinstance(paths, list) else [paths]
                parts = [np.asarray(lookup(obs, p, nested=self.schema == "aloha")) for p in paths]
                value = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=-1)
            feeds[i.name] = self.feed(i.name, value, i.shape)
        out = self.session.run([self.output], feeds)[0]
        return np.asarray(out[0], dtype=np.float32)


async def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--schema", default="export", choices=("export", "aloha", "droid", "libero"))
    ap.add_argument("--schema-map", default="{}")
    ap.add_argument("--fault", default="none", choices=FAULTS)
    ap.add_argument("--fault-after", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="wait this long before each answer")
    ap.add_argument("--log")
    ap.add_argument("--tls-cert", help="serve wss:// with this PEM certificate (and --tls-key)")
    ap.add_argument("--tls-key")
    ap.add_argument("--metadata", default='{"policy": "openpi_server fixture"}')
    args = ap.parse_args()

    policy = Policy(args.model, args.schema, json.loads(args.schema_map))
    metadata = json.loads(args.metadata)
    metadata.setdefault("schema", args.schema)
    packer = msgpack_numpy.Packer()
    log = open(args.log, "a", buffering=1) if args.log else None
    served = 0

    async def handler(ws):
        nonlocal served
        await ws.send(packer.pack(metadata))
        prev_total_ms = None
        while True:
            try:
                message = await ws.recv()
            except websockets.ConnectionClosed:
                return
            start = time.monotonic()
            try:
                obs = msgpack_numpy.unpackb(message)
                served += 1
                if log:
                    log.write(json.dumps({"n": served, "obs": describe(obs), "bytes": len(message)}) + "\n")
                fault = args.fault if served > args.fault_after else "none"
                if fault == "traceback":
                    raise RuntimeError("fixture policy failure (--fault traceback)")
                infer_start = time.monotonic()
                actions = policy.infer(obs)
                infer_ms = (time.monotonic() - infer_start) * 1e3
                if fault == "width":
                    actions = actions[:, :-1]
                elif fault == "nan":
                    actions = actions.copy()
                    actions[1, 2] = np.nan
                elif fault == "dtype":
                    actions = actions.astype(np.int64)
                if args.delay_ms > 0:
                    await asyncio.sleep(args.delay_ms / 1e3)
                timing = {"infer_ms": infer_ms}
                if prev_total_ms is not None:
                    timing["prev_total_ms"] = prev_total_ms
                if fault == "garbage":
                    await ws.send(b"\x82\xa7actions\xc4")  # a map cut short
                elif fault == "oversize":
                    await ws.send(b"\x00" * (65 << 20))
                elif fault == "hang":
                    await asyncio.sleep(3600)
                elif fault == "close":
                    await ws.close()
                    return
                else:
                    await ws.send(packer.pack({"actions": actions, "server_timing": timing}))
                prev_total_ms = (time.monotonic() - start) * 1e3
            except Exception:
                await ws.send(traceback.format_exc())
                await ws.close(code=1011, reason="Internal server error. Traceback included in previous frame.")
                return

    def health(connection, request):
        if request.path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "OK\n")
        return None

    tls = None
    if args.tls_cert:
        import ssl

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    async with ws_server.serve(
        handler, "127.0.0.1", args.port, compression=None, max_size=None, process_request=health, ssl=tls
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print("READY " + json.dumps({"port": port}), flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
