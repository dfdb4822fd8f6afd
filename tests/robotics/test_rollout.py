from __future__ import annotations

import json
import threading
import urllib.request

import numpy as np
import pytest

from apps.robotics.envs import toy_expert_action
from apps.robotics.rollout import evaluate
from apps.robotics.sampling import Policy
from tests.robotics.conftest import tiny_net


class ExpertPolicy:
    """The scripted expert behind the Policy interface: the harness must report it as perfect."""

    def __init__(self, noise_free=True):
        self.net = type("N", (), {"use_image": False})()
        self.latencies_ms, self.nfe_per_chunk = [], 0
        self.n_action_steps = self.n_vision_steps = 0
        self.phase, self.execute, self.temporal_ensemble = "end", 1, None

    def reset(self):
        pass

    def select_action(self, obs):
        s = obs["state"]
        return np.stack([toy_expert_action(x[:2].astype(float), x[2:].astype(float)) for x in s])


class IdlePolicy(ExpertPolicy):
    def select_action(self, obs):
        return obs["agent_pos"]


def test_harness_scores_expert_and_idle(tmp_path):
    good = evaluate(ExpertPolicy(), "toy_push", n_episodes=8, seed0=100000, n_videos=1, video_dir=tmp_path)
    assert good["success_rate"] == 1.0 and good["mean_max_coverage"] > 0.8
    assert good["success_rate_ci95"][0] > 0.6 and len(good["episode_steps"]) == 8
    assert (tmp_path / "episode_100000.mp4").stat().st_size > 0
    bad = evaluate(IdlePolicy(), "toy_push", n_episodes=8, seed0=100000, max_steps=20)
    assert bad["success_rate"] == 0.0 and bad["mean_max_coverage"] == 0.0
    assert max(bad["episode_steps"]) == 20
    for kw in ({"n_episodes": 0}, {"max_steps": 0}, {"n_videos": -1}, {"seed0": -1}):  # IndexError / silent / gym error
        with pytest.raises(ValueError, match="must be >= "):
            evaluate(IdlePolicy(), "toy_push", **{"n_episodes": 2, **kw})


def test_pusht_closed_loop_smoke(tmp_path):
    net = tiny_net(image_size=96, crop_size=84, state_dim=2)
    pol = Policy(net, ["state[0:2]"], n_action_steps=2, n_vision_steps=2, execute=4)
    r = evaluate(pol, "pusht", n_episodes=2, seed0=100000, max_steps=6, n_videos=1, video_dir=tmp_path)
    for k in ("success_rate", "success_rate_ci95", "mean_max_coverage", "mean_max_coverage_ci95",
              "latency_ms_per_chunk", "nfe_per_chunk"):
        assert k in r
    assert r["episode_steps"] == [6, 6] and r["nfe_per_chunk"] == 2
    assert len(pol.latencies_ms) == 2  # re-planned every 4 of 6 steps


def test_loopback_server(toy_eps):
    from apps.robotics.server import make_server

    net = tiny_net()
    srv = make_server(Policy(net, ["state"], n_action_steps=1, n_vision_steps=1), port=0)
    assert srv.server_address[0] == "127.0.0.1"
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}"
        obs = {"state": [0.1, 0.2, 0.3, 0.4], "image": np.zeros((16, 16, 3), int).tolist()}
        req = urllib.request.Request(url + "/act", json.dumps({"obs": obs}).encode(), method="POST")
        out = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert len(out["action"]) == 2
        bad = urllib.request.Request(url + "/act", b'{"nope": 1}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=60)
        assert err.value.code == 400
    finally:
        srv.shutdown()
        srv.server_close()


def _post(url, body: bytes):
    """POST `body`; returns (status, decoded JSON) for success and HTTP errors alike."""
    req = urllib.request.Request(url, body, method="POST")
    try:
        return 200, json.loads(urllib.request.urlopen(req, timeout=60).read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_bad_requests_and_batch_size_change():
    from apps.robotics.server import make_server

    srv = make_server(Policy(tiny_net(), ["state"], n_action_steps=1, n_vision_steps=1), port=0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/act"
        img = np.zeros((16, 16, 3), int)
        for body in ({"obs": [1, 2, 3]}, {"obs": {"state": [0.1, 0.2, 0.3, 0.4], "image": (img + 300).tolist()}},
                     {"obs": {"state": [0.1, 0.2], "image": img.tolist()}}, [1],
                     {"obs": {"state": [[[0.1, 0.2, 0.3, 0.4]]] * 2, "image": [img.tolist()] * 2}}):  # (2, 1, 4) state
            code, out = _post(url, json.dumps(body).encode())
            assert code == 400 and out["error"], body
        code, out = _post(url, b"{not json")
        assert code == 400
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
        conn.putrequest("POST", "/act")
        conn.putheader("Content-Length", "-1")  # read until EOF: the reply never came (timeout)
        conn.endheaders()
        reply = conn.getresponse()
        assert reply.status == 400 and "Content-Length" in json.loads(reply.read())["error"]
        conn.close()
        one = {"state": [0.1, 0.2, 0.3, 0.4], "image": img.tolist()}
        code, out = _post(url, json.dumps({"obs": one}).encode())
        assert code == 200 and np.shape(out["action"]) == (2,)
        two = {"state": [[0.1, 0.2, 0.3, 0.4]] * 2, "image": [img.tolist()] * 2}
        code, out = _post(url, json.dumps({"obs": two}).encode())
        assert code == 200 and np.shape(out["action"]) == (2, 2)  # re-planned for the new batch size
    finally:
        srv.shutdown()
        srv.server_close()


def test_serve_cli_clean_errors(tmp_path, capsys):
    import socket

    from apps.robotics.cli import main
    from tests.robotics.test_cli import _policy_file

    assert main(["serve", "--ckpt", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().out
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--ckpt", str(_policy_file(tmp_path / "p.pt")), "--port", str(port)]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().out


def test_state_of_another_width_than_training_is_refused(tmp_path):
    """A policy trained on PushT's 5-value state with spec ``state[0:4]`` + ``state[4:5]@sincos``
    used to take a 6-value state and silently drop the sixth column (serve answered 200)."""
    from apps.robotics.server import make_server
    from apps.robotics.train import load_policy_net, save_policy

    keys = ["state[0:4]", "state[4:5]@sincos"]
    kw = dict(action_dim=2, state_dim=6, horizon=8, image_size=0, crop_size=0, dim=32, num_heads=2, depth_dual=1,
              future_target="state")
    net = tiny_net(**kw)
    net.obs_field_shapes = {"state": [5]}
    module = type("M", (), {"net": net})()
    net, _ = load_policy_net(save_policy(tmp_path / "p.pt", module, kw, {}, {"state_keys": keys}))
    assert net.obs_field_shapes == {"state": [5]}  # the checkpoint carries the training shapes
    pol = Policy(net, keys, n_action_steps=1, n_vision_steps=1)
    with pytest.raises(ValueError, match=r"'state' has 6 values per frame, the policy was trained on 5"):
        pol.select_action({"state": np.zeros(6, np.float32)})
    assert np.shape(pol.select_action({"state": np.zeros(5, np.float32)})) == (2,)  # the history was not poisoned
    srv = make_server(pol, port=0)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/act"
        code, out = _post(url, json.dumps({"obs": {"state": [0.1] * 6}}).encode())
        assert code == 400 and "6 values" in out["error"] and "trained on 5" in out["error"]
        code, out = _post(url, json.dumps({"obs": {"state": [0.1] * 5}}).encode())
        assert code == 200 and np.shape(out["action"]) == (2,)
    finally:
        srv.shutdown()
        srv.server_close()


def test_batches_are_told_by_the_training_rank_and_must_agree():
    """A batch of 2-D fields (PushT keypoints (9, 2)) was refused as 'expected (D,) or (B, D)'; an empty
    batch failed in a reshape; a 2-state batch with 1 image said 'image is (16, 16, 3), the policy
    expects (16, 16, 3)'."""
    net = tiny_net(state_dim=20, image_size=0, crop_size=0, future_target="state")
    net.obs_field_shapes = {"keypoint": [9, 2], "state": [5]}
    pol = Policy(net, ["keypoint", "state[0:2]"], n_action_steps=1, n_vision_steps=1)
    assert np.shape(pol.select_action({"keypoint": np.zeros((3, 9, 2)), "state": np.zeros((3, 5))})) == (3, 2)
    assert np.shape(pol.select_action({"keypoint": np.zeros((9, 2)), "state": np.zeros(5)})) == (2,)
    with pytest.raises(ValueError, match=r"'keypoint' has shape \(18,\); expected \(9, 2\) or \(B, 9, 2\)"):
        pol.select_action({"keypoint": np.zeros(18), "state": np.zeros(5)})
    img = np.zeros((16, 16, 3), np.uint8)
    pol = Policy(tiny_net(), ["state"], n_action_steps=1, n_vision_steps=1)
    with pytest.raises(ValueError, match=r"batch sizes \{'state': 2, 'image': 1\} must be equal and >= 1"):
        pol.select_action({"state": np.zeros((2, 4)), "image": img[None]})
    with pytest.raises(ValueError, match=r"batch sizes \{'state': 0, 'image': 0\}"):
        pol.select_action({"state": np.zeros((0, 4)), "image": np.zeros((0, 16, 16, 3), np.uint8)})
    with pytest.raises(ValueError, match=r"one is a batch, the other a single observation"):
        pol.select_action({"state": np.zeros((2, 4)), "image": img})
    assert np.shape(pol.select_action({"state": np.zeros(4), "image": img, "unused": np.zeros((3, 3, 3))})) == (2,)


def test_float_frames_and_non_finite_states_are_refused():
    """Float 0..1 frames (LeRobot's convention) were divided by 255 again and acted on as near-black
    images; a NaN state entered the history and made every later chunk NaN."""
    pol = Policy(tiny_net(), ["state"], n_action_steps=1, n_vision_steps=1)
    img = np.zeros((16, 16, 3))
    with pytest.raises(ValueError, match=r"'image' must be uint8 0\.\.255 frames, got float64.*\* 255"):
        pol.select_action({"state": np.zeros(4), "image": img + 0.5})
    with pytest.raises(ValueError, match=r"got int64 with values -1\.\.-1"):
        pol.select_action({"state": np.zeros(4), "image": img.astype(np.int64) - 1})
    with pytest.raises(ValueError, match=r"non-finite"):
        pol.select_action({"state": np.array([0, np.nan, 0, 0]), "image": img.astype(np.uint8)})
    assert not pol.history  # nothing entered it
    action = pol.select_action({"state": np.zeros(4), "image": img.astype(np.int64) + 255})  # ints in range: cast
    assert np.isfinite(action).all()


def test_task_ids_are_checked_against_the_batch_and_the_trained_tasks():
    """A task_index of the wrong count, out of range or fractional failed deep inside torch (or
    indexed the embedding out of range); one id is shared by a whole batch."""
    pol = Policy(tiny_net(image_size=0, future_target="state", n_tasks=3), ["state"], n_action_steps=1, n_vision_steps=1)
    states = np.zeros((2, 4), np.float32)
    for task, match in (([0, 1, 2], r"3 ids for a batch of 2"), ([0, 3], r"outside 0\.\.2"),
                        ([0.5, 1], "whole numbers"), ([-1, 0], r"outside 0\.\.2")):
        with pytest.raises(ValueError, match=match):
            pol.select_action({"state": states, "task_index": np.asarray(task)})
    assert pol.select_action({"state": states, "task_index": 2}).shape == (2, 2)
    assert pol.select_action({"state": states, "task_index": np.array([1.0, 0.0])}).shape == (2, 2)
