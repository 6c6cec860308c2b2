"""Weights files: nothing in them runs code, non-weights files are named for what they are, and the offline
advice for hub weights is true (a file copied where the message says is used) and comes at once."""

from __future__ import annotations

import os
import pickle
import re
import time

import pytest
import torch

import embedkit.models.weights as weights_mod
from embedkit import Backbone, WeightsError, get_spec
from embedkit.models.checkpoint import read_checkpoint


class _Evil:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_crafted_pickle_is_refused_and_never_runs(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    obj = {"state_dict": {"w": torch.zeros(2)}, "payload": _Evil(marker)}
    if fmt == "zip":
        torch.save(obj, path)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError) as e:
        read_checkpoint(path)
    msg = str(e.value)
    assert "refused" in msg and "run code" in msg and "state_dict" in msg, msg
    assert "weights_only` set to `False`" not in msg  # never the advice to turn the protection off
    with pytest.raises(WeightsError, match="refused"):
        Backbone("timm:test_vit", weights=path, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("content,found", [
    (b"root:x:0:0:root:/root:/bin/bash\n", "(found a text file)"),
    (b"", "an empty file"),
    (b"\x89PNG\r\n\x1a\n0000", "a PNG image"),
])
def test_a_file_that_is_not_weights_says_what_it_is(tmp_path, content, found):
    path = tmp_path / "notes.txt"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as e:
        Backbone("timm:test_vit", weights=path, device="cpu")
    msg = str(e.value)
    assert "not a torch/safetensors file" in msg and found in msg and "torch.save" in msg, msg
    assert "/bin/bash" not in msg  # the kind of the file, never its content


def test_plain_state_dict_and_safetensors_still_load(tmp_path):
    from safetensors.torch import save_file

    model = get_spec("timm:test_vit").create_model()
    torch.nn.init.constant_(model.head.bias, 0.5)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    save_file(model.state_dict(), str(tmp_path / "w.bin"))  # safetensors content, recognised without the suffix
    for name in ("w.pth", "w.bin"):
        bb = Backbone("timm:test_vit", layer="logits", weights=tmp_path / name, device="cpu")
        assert torch.equal(bb.model.body.head.bias, model.head.bias)


def _advised_path(msg: str) -> str:
    m = re.search(r"copy it to (\S+), or pass", msg)
    assert m, msg
    return m.group(1)


def test_offline_timm_advice_is_true_and_immediate(tmp_path, monkeypatch, capfd):
    """Offline: one line at once (no hub retries); a file copied where it says is then loaded."""
    import huggingface_hub

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)  # no user cache
    monkeypatch.setattr(weights_mod, "reachable", lambda url, timeout=3.0: False)  # offline, whatever this machine is
    t0 = time.perf_counter()
    with pytest.raises(WeightsError) as e:
        Backbone("timm:test_vit", device="cpu")
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "\n" not in msg and "offline" in msg and "huggingface.co/timm/test_vit" in msg and "--weights" in msg
    assert "Retrying" not in capfd.readouterr().err
    target = _advised_path(msg)
    assert target.startswith(str(tmp_path / "hub"))

    from safetensors.torch import save_file

    fake = get_spec("timm:test_vit").create_model()
    torch.nn.init.constant_(fake.head.bias, 0.125)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    save_file(fake.state_dict(), target)
    monkeypatch.setenv("TIMM_USE_OLD_CACHE", "1")  # timm's old-cache switch changes nothing
    bb = Backbone("timm:test_vit", layer="logits", device="cpu")
    assert bb.weights_info.kind == "hub" and len(bb.weights_info.sha256) == 64
    assert torch.equal(bb.model.body.head.bias, fake.head.bias)


def test_offline_torchvision_advice_is_true(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(weights_mod, "reachable", lambda url, timeout=3.0: False)
    with pytest.raises(WeightsError) as e:
        Backbone("torchvision:mobilenet_v3_small", device="cpu")
    target = _advised_path(str(e.value))
    fake = get_spec("torchvision:mobilenet_v3_small").create_model()
    torch.nn.init.constant_(fake.classifier[3].bias, 0.25)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    torch.save(fake.state_dict(), target)
    bb = Backbone("torchvision:mobilenet_v3_small", layer="logits", device="cpu")
    assert torch.equal(bb.model.body.classifier[3].bias, fake.classifier[3].bias)


def test_the_connectivity_check_is_bounded():
    t0 = time.perf_counter()
    weights_mod.reachable("https://no-such-host.invalid/w.pth", timeout=1.0)
    assert time.perf_counter() - t0 < 3
    assert weights_mod.reachable("not a url") is False


def test_hf_hub_offline_switch_counts_as_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert weights_mod.reachable("https://huggingface.co/timm/test_vit.r160_in1k/resolve/main/model.safetensors") is False


def test_pickle_module_is_what_torch_refuses():
    """Guard: the refusal message is recognised for the torch version installed."""
    from embedkit.models.checkpoint import _unsafe_object

    try:
        torch.load(_pickled(_Evil("/nonexistent/x")), weights_only=True)
    except pickle.UnpicklingError as exc:
        assert _unsafe_object(exc) in ("posix.system", "os.system", "nt.system")


def _pickled(obj):
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf
