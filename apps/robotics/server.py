"""A minimal policy server bound to loopback (127.0.0.1 only; no authentication, so never public).

``POST /act`` with ``{"obs": {"state": [...], "image": [[[r, g, b], ...]]}}`` (dataset field names,
unbatched) returns ``{"action": [...]}``; ``POST /reset`` starts a new episode; ``GET /health``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

HOST = "127.0.0.1"


def parse_obs(req) -> dict[str, np.ndarray]:
    """The request's ``obs`` as arrays; ValueError for anything that is not an object of numeric
    fields, or for image values outside 0..255 (a cast to uint8 would wrap them silently)."""
    obs = req.get("obs") if isinstance(req, dict) else None
    if not isinstance(obs, dict) or not obs:
        raise ValueError('expected {"obs": {"state": [...], "image": [...]}} (an object of named fields)')
    out = {}
    for k, v in obs.items():
        x = np.asarray(v, dtype=np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"obs field {k!r} has non-finite values")
        if k == "image":
            if x.min(initial=0) < 0 or x.max(initial=0) > 255:
                raise ValueError(f"obs field 'image' must hold values in 0..255, got {x.min()}..{x.max()}")
            out[k] = x.astype(np.uint8)
        else:
            out[k] = x.astype(np.float32)
    return out


def make_server(policy, port: int = 8765) -> ThreadingHTTPServer:
    """An HTTP server around a `Policy` (one lock: requests are served in order)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _reply(self, code: int, obj: dict) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/health":
                self._reply(200, {"ok": True, "horizon": policy.net.horizon, "state_keys": policy.state_keys})
            else:
                self._reply(404, {"error": f"unknown path {self.path}"})

        def do_POST(self):
            try:
                n = int(self.headers.get("Content-Length", 0))
                if n < 0:  # rfile.read(-1) would wait for the client to close: the request would hang
                    raise ValueError(f"Content-Length must be >= 0, got {n}")
                req = json.loads(self.rfile.read(n) or b"{}")
                with lock:
                    if self.path == "/reset":
                        policy.reset()
                        self._reply(200, {"ok": True})
                        return
                    if self.path != "/act":
                        self._reply(404, {"error": f"unknown path {self.path}"})
                        return
                    action = policy.select_action(parse_obs(req))
                self._reply(200, {"action": np.asarray(action).tolist()})
            except Exception as exc:  # noqa: BLE001 -- any failure here comes from the request's content
                # (shapes the net rejects deep inside torch included): answer it, never drop the connection
                self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})

    return ThreadingHTTPServer((HOST, port), Handler)


def serve(ckpt: str, port: int = 8765, **policy_kwargs) -> None:
    from apps.robotics.sampling import Policy
    from apps.robotics.train import load_policy_net

    net, info = load_policy_net(ckpt)
    try:
        policy = Policy(net, info["state_keys"], **policy_kwargs)
    except ValueError as exc:  # settings the checkpoint's net cannot take (e.g. execute > horizon)
        raise ValueError(f"{ckpt}: {exc}") from exc
    try:
        server = make_server(policy, port)
    except OSError as exc:  # port in use, no permission
        raise OSError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from exc
    print(f"serving {ckpt} on http://{HOST}:{port} (POST /act, POST /reset, GET /health)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
