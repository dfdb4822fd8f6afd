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
                req = json.loads(self.rfile.read(n) or b"{}")
                with lock:
                    if self.path == "/reset":
                        policy.reset()
                        self._reply(200, {"ok": True})
                        return
                    if self.path != "/act":
                        self._reply(404, {"error": f"unknown path {self.path}"})
                        return
                    obs = {k: np.asarray(v, dtype=np.uint8 if k == "image" else np.float32)
                           for k, v in req["obs"].items()}
                    action = policy.select_action(obs)
                self._reply(200, {"action": np.asarray(action).tolist()})
            except (KeyError, ValueError, TypeError) as exc:
                self._reply(400, {"error": f"{type(exc).__name__}: {exc}"})

    return ThreadingHTTPServer((HOST, port), Handler)


def serve(ckpt: str, port: int = 8765, **policy_kwargs) -> None:
    from apps.robotics.sampling import Policy
    from apps.robotics.train import load_policy_net

    net, info = load_policy_net(ckpt)
    server = make_server(Policy(net, info["state_keys"], **policy_kwargs), port)
    print(f"serving {ckpt} on http://{HOST}:{port} (POST /act, POST /reset, GET /health)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
