"""GPU code paths checked on the CPU (issue 26): call shapes against the libraries' real signatures, the
device and precision choices, fall-backs and error paths, with stand-ins where a GPU library would run."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
from helpers import captured_logs

from embedkit.classify.svm import SVMClassifier
from embedkit.errors import ConfigError


def blobs(n_per=12, k=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (k, d))
    X = np.concatenate([c + rng.normal(0, 1, (n_per, d)) for c in centres]).astype(np.float32)
    return X, np.repeat([f"c{i}" for i in range(k)], n_per).astype(object)


class CumlSVC:
    """cuML's SVC as of 25.06+: keyword-only, no ``**kwargs`` (a wrong keyword is a TypeError, as there)."""

    made: list = []

    def __init__(self, *, handle=None, C=1.0, kernel="rbf", degree=3, gamma="scale", coef0=0.0, tol=1e-3,
                 cache_size=1024.0, max_iter=-1, nochange_steps=1000, verbose=False, output_type=None,
                 probability=False, random_state=None, class_weight=None, decision_function_shape="ovo"):
        self.decision_function_shape = decision_function_shape
        CumlSVC.made.append(self)

    def fit(self, X, y, sample_weight=None):
        self.fit_args = (X.dtype, len(np.unique(y)), sample_weight)
        return self


@pytest.fixture
def fake_cuml(monkeypatch):
    """A CUDA machine with cuML, as far as the SVM's backend choice and its cuML call can tell."""
    import embedkit.classify.svm as svm

    mod = types.ModuleType("cuml")
    mod.svm = types.SimpleNamespace(SVC=CumlSVC)
    monkeypatch.setitem(sys.modules, "cuml", mod)
    monkeypatch.setattr(svm, "svm_backend", lambda backend, device: "cuml")
    CumlSVC.made = []
    return CumlSVC


def test_cuml_svc_is_called_with_its_real_keywords(fake_cuml):
    X, y = blobs()
    for decision in ("ovr", "ovo"):
        clf = SVMClassifier(decision=decision).fit(X, y)
        assert clf.backend_ == "cuml"
        assert fake_cuml.made[-1].decision_function_shape == decision
        assert fake_cuml.made[-1].fit_args[:2] == (np.float32, 3)


def test_cuml_multiclass_sample_weights_fall_back_to_sklearn(fake_cuml):
    """cuML drops sample weights beyond 2 classes: the weighted fit goes to scikit-learn, with a note."""
    X, y = blobs()
    with captured_logs() as logs:
        clf = SVMClassifier(class_weight={"c1": 5.0}).fit(X, y)
    assert clf.backend_ == "sklearn" and not fake_cuml.made
    assert "cuML ignores sample weights" in logs.text
    assert (clf.predict(X) == y).mean() > 0.9
    # two classes: cuML honours the weights, so it keeps the fit
    two = np.isin(y, ["c0", "c1"])
    clf = SVMClassifier().fit(X[two], y[two], sample_weight=np.ones(two.sum()))
    assert clf.backend_ == "cuml" and fake_cuml.made[-1].fit_args[2] is not None


def test_save_classifier_refuses_a_cuml_fit(fake_cuml, tmp_path):
    from embedkit.classify.model_folder import save_classifier

    X, y = blobs()
    clf = SVMClassifier().fit(X, y)
    with pytest.raises(ConfigError, match="fitted with cuML cannot be saved.*backend='sklearn'"):
        save_classifier(tmp_path / "model", clf, store=None)
    assert not (tmp_path / "model").exists()


# --------------------------------------------------------------------------- precision


@pytest.mark.parametrize("capability, want", [((7, 0), "float16"), ((7, 5), "float16"), ((8, 0), "bfloat16"),
                                              ((8, 6), "bfloat16"), ((9, 0), "bfloat16")])
def test_auto_precision_follows_the_chosen_devices_capability(monkeypatch, capability, want):
    """bf16 only where the hardware has it (>= 8.0), asked of the chosen device, not the current one."""
    import torch

    from embedkit.device import autocast_dtype

    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: asked.append(d) or capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts here: unused
    assert autocast_dtype(torch.device("cuda:1")) == getattr(torch, want)
    assert asked == [torch.device("cuda:1")]
    assert autocast_dtype(torch.device("cuda:1"), "bf16") == torch.bfloat16  # an explicit choice stays
    assert autocast_dtype(torch.device("cpu")) is None


@pytest.mark.slow  # a fine-tuning run
def test_fp16_resume_of_a_run_saved_without_a_scaler(monkeypatch, tmp_path):
    """A run saved on the CPU (disabled GradScaler: state {}) resumes with an enabled fp16 scaler."""
    import torch
    from helpers import write_shapes

    import embedkit.finetune.train as train

    data = write_shapes(tmp_path / "shapes", per_class=5, size=32)
    opts = dict(backbone="efficientnet_lite0", input_size=32, batch_size=8, workers=0, augment=False,
                strategy="head", lr=1e-2, progress=False, log=lambda m: None)
    first = train.finetune(data, tmp_path / "run", epochs=1, **opts)
    assert torch.load(first.last_path, weights_only=True)["scaler"] == {}
    monkeypatch.setattr(train, "autocast_dtype", lambda device: torch.float16)  # what a pre-Ampere GPU picks
    more = train.finetune(data, tmp_path / "run", resume=True, epochs=2, **opts)
    assert more.epochs_run == 1
    assert torch.load(more.last_path, weights_only=True)["scaler"]["scale"] > 0


# --------------------------------------------------------------------------- FAISS on the GPU


@pytest.fixture
def fake_faiss_gpu(monkeypatch):
    """CPU FAISS made to look like a GPU build on a CUDA machine: index_cpu_to_gpu records the device number."""
    import faiss

    import embedkit.device

    moved = []
    monkeypatch.setattr(embedkit.device, "cuda_available", lambda: True)
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: object(), raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, dev, index: moved.append(dev) or index, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", lambda index: index, raising=False)
    return moved


def test_faiss_gpu_index_goes_to_the_chosen_device_and_caps_nprobe(fake_faiss_gpu):
    from embedkit.retrieve.index import KNNIndex

    X = np.random.default_rng(0).normal(size=(2100, 4)).astype(np.float32)
    index = KNNIndex(kind="ivf", nlist=2100, nprobe=4000, backend="faiss-gpu", device="cuda:1").fit(X)
    assert fake_faiss_gpu == [1]
    index.search(X[:2], 1)
    assert index.searcher_.index.nprobe == 2048  # not nlist=2100: the GPU throws beyond 2048
    flat = KNNIndex(kind="flat", backend="faiss-gpu", device="cuda").fit(X[:50])
    assert fake_faiss_gpu == [1, 0] and flat.search(X[:1], 1)[1][0, 0] == 0


def test_knn_classifiers_take_the_device(monkeypatch, fake_faiss_gpu):
    """cuda:N reaches the kNN index; cpu without FAISS searches with torch instead of failing."""
    import embedkit.device
    from embedkit.classify.knn import KNNCodesClassifier
    from embedkit.retrieve.knn_classifier import KNNClassifier

    X, y = blobs()
    knn = KNNCodesClassifier(n_neighbors=3, device="cuda:1").fit(X, y)
    assert knn._index().index_.backend_ == "faiss-gpu" and fake_faiss_gpu == [1]
    assert KNNClassifier(device="cuda:1").get_params()["device"] == "cuda:1"
    real = embedkit.device.has_module
    monkeypatch.setattr(embedkit.device, "has_module", lambda m: m != "faiss" and real(m))
    cpu = KNNCodesClassifier(n_neighbors=3, device="cpu").fit(X, y)
    assert cpu._index().index_.backend_ == "torch" and (cpu.predict(X) == y).mean() > 0.9


# --------------------------------------------------------------------------- decoding on the device


def _jpeg_tensors(n=3):
    import io

    import torch
    from PIL import Image

    out = []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (40 + 10 * i, 30), (40 * i, 100, 200)).save(buf, "JPEG")
        out.append(torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8))
    return out


def test_device_decode_out_of_memory_backs_off_instead_of_skipping(monkeypatch):
    """An injected torch.OutOfMemoryError (decode, then resize) costs no row; only a bad bitstream is "corrupt"."""
    import torch
    import torchvision.io
    from torchvision.transforms.v2 import functional as F

    from embedkit.io.decode import decode_on_device
    from embedkit.models.preprocessing import Preprocessing

    pre = Preprocessing()
    good = _jpeg_tensors()
    bad = torch.frombuffer(bytearray(b"\xff\xd8\xff\xe0" + bytes(range(200)) + b"\xff\xd9"), dtype=torch.uint8)
    expected, keep, failed = decode_on_device(list(good), pre, torch.device("cpu"))
    assert keep == [0, 1, 2] and failed == []

    real_decode, real_resize, calls = torchvision.io.decode_jpeg, F.resize, []

    def decode(data, mode, device="cpu"):
        # the device decoder (called with the batch's torch.device) is out of memory; the CPU one ("cpu") is not
        calls.append("cpu" if isinstance(device, str) else "device")
        if not isinstance(device, str):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_decode(data, mode=mode, device=device)

    resized = []

    def resize_oom_once(t, *a, **k):
        resized.append(t)
        if len(resized) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real_resize(t, *a, **k)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode)
    monkeypatch.setattr(F, "resize", resize_oom_once)
    batch, keep, failed = decode_on_device([*good, bad], pre, torch.device("cpu"))
    assert keep == [0, 1, 2] and torch.equal(batch, expected)
    assert [k for k, _ in failed] == [3] and failed[0][1].startswith("corrupt JPEG")
    assert calls[:2] == ["device", "cpu"] and len(resized) == 4  # batch OOM -> CPU; the first resize retried


# --------------------------------------------------------------------------- Ray workers


def test_ray_worker_plan_follows_the_device():
    """Which resources Ray actors ask for, from --device and the cluster's GPUs (no cluster needed)."""
    from embedkit.runner.ray_engine import check_ray_options, worker_plan

    assert worker_plan("cpu", None, 4, None, 16) == (0.0, 1, "cpu", 16)  # GPUs there, none asked for
    assert worker_plan("auto", None, 4, None, 16) == (1.0, 4, "auto", 1)
    assert worker_plan("auto", None, 0, 2, 16) == (0.0, 2, "cpu", 8)
    assert worker_plan("cuda", 0.5, 1, None, 16) == (0.5, 2, "cuda", 1)
    with pytest.raises(ConfigError, match="the Ray cluster has no GPUs"):
        worker_plan("cuda", None, 0, None, 8)
    with pytest.raises(ConfigError, match="--num-gpus 1 asks GPUs for workers that --device cpu"):
        check_ray_options("cpu", "cpu", 1)
    with pytest.raises(ConfigError, match="--device cuda \\(or auto\\) with --engine ray"):
        check_ray_options("cuda:1", "cpu", None)


# --------------------------------------------------------------------------- codes: fp32 reduction, numerics recorded


def test_spatial_reduction_runs_in_fp32_under_autocast():
    """A bf16 code layer is reduced in fp32: the mean of 1 and 1 + 2^-7 is 1 + 2^-8, which bf16 cannot hold."""
    import torch
    from torch import nn

    from embedkit.models.features import FeatureModel
    from embedkit.models.registry import LOGITS

    class BF16Map(nn.Module):
        def forward(self, x):
            v = torch.tensor([1.0, 1.0 + 2 ** -7], dtype=torch.bfloat16)
            return v.repeat(x.shape[0], 1, 1, 1).reshape(x.shape[0], 1, 1, 2)

    fm = FeatureModel(BF16Map(), LOGITS, "timm", "avg")  # the logits node: the whole module is the body
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fm(torch.zeros(2, 3, 4, 4))
    assert out.dtype == torch.float32 and out[0, 0].item() == 1.0 + 2 ** -8


def test_store_records_precision_and_decode_and_refuses_a_mix(shapes_dir, tmp_path):
    import embedkit
    from embedkit.classify.model_folder import check_store_matches
    from embedkit.errors import MismatchError
    from embedkit.models.backbone import Backbone

    store = embedkit.embed(shapes_dir, tmp_path / "s", device="cpu", workers=0, progress=False).store
    assert store.identity["precision"] == "fp32" and store.identity["decode"] == "cpu"
    for kw, fix in ((dict(precision="bf16"), "--precision fp32"), (dict(decode="device"), "--decode cpu")):
        with pytest.raises(MismatchError, match=f"computed another way .*give {fix} to match"):
            embedkit.embed(shapes_dir, tmp_path / "s", device="cpu", workers=0, append=True, progress=False, **kw)
    # queries and models: comparable codes, a note instead of a refusal
    gpu_made = {**store.identity, "precision": "bf16"}
    with captured_logs() as logs:
        Backbone.from_identity(gpu_made, device="cpu")
        check_store_matches({"identity": gpu_made, "dim": store.dim, "postprocess": store.postprocess.identity},
                            store)
    assert "made in bf16, new images are embedded in fp32" in logs.text and "--precision bf16" in logs.text
    assert "computed another way than store" in logs.text


# --------------------------------------------------------------------------- the device, resolved once


def test_one_compute_value_decides_every_library(monkeypatch):
    """resolve_compute turns --device into one value; every resolver takes it and keeps its choices."""
    import embedkit.device as device
    from embedkit.classify.svm import svm_backend
    from embedkit.retrieve.common import resolve_knn_backend
    from embedkit.view.project import resolve_view_backend

    cpu = device.resolve_compute("cpu")
    assert device.resolve_compute(cpu) is cpu and device.resolve_device(cpu).type == "cpu"
    assert resolve_view_backend("pca", "auto", cpu) == "sklearn" and svm_backend("auto", cpu) == "sklearn"

    monkeypatch.setattr(device, "cuda_available", lambda: True)  # a CUDA machine with cuML and CPU-only FAISS
    monkeypatch.setattr(device, "has_module", lambda m: True)
    gpu = device.resolve_compute("auto")
    assert (gpu.name, gpu.svm, gpu.knn, gpu.projection) == ("cuda", "cuml", "torch", "cuml")
    monkeypatch.setattr(device, "has_module", lambda m: pytest.fail("resolved again"))
    assert svm_backend("auto", gpu) == "cuml"  # decided once, then kept
    assert resolve_knn_backend("auto", "flat", gpu) == "torch" and resolve_knn_backend("auto", "ivf", gpu) == "faiss"
    with pytest.raises(ConfigError, match="device 'cpu'"):
        svm_backend("cuml", cpu)
