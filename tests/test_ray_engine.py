"""The Ray engine on a local cluster: same store as the local engine, a killed worker, kill + --resume."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import write_shapes

import embedkit

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

from embedkit.runner.ray_engine import FAULT_ENV  # noqa: E402

pytestmark = pytest.mark.slow  # a Ray cluster


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local 2-CPU Ray cluster; its workers see the fault hook's path (the file exists: no fault yet)."""
    fault = tmp_path_factory.mktemp("fault") / "kill-once"
    fault.touch()
    os.environ[FAULT_ENV] = str(fault)  # workers inherit the driver's environment at start
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield fault
    ray.shutdown()
    os.environ.pop(FAULT_ENV, None)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = write_shapes(tmp_path_factory.mktemp("ray_imgs"), per_class=7, seed=5)
    (root / "square" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return root


@pytest.fixture(scope="module")
def local_store(images, tmp_path_factory):
    return embedkit.embed(images, tmp_path_factory.mktemp("local") / "s", shard_rows=8, workers=0,
                          progress=False).store


def _same(a, b):
    assert a.paths.tolist() == b.paths.tolist() and a.labels.tolist() == b.labels.tolist()
    assert np.allclose(np.asarray(a.codes), np.asarray(b.codes), atol=1e-4)
    assert a.skipped == b.skipped and len(a.skipped) == 1
    assert a.column("sha1").tolist() == b.column("sha1").tolist()


def test_ray_engine_writes_the_local_engines_store(cluster, images, local_store, tmp_path):
    res = embedkit.embed(images, tmp_path / "s", engine="ray", shard_rows=8, progress=False)
    assert res.engine == "ray" and res.embedded == 21 and res.skipped == 1
    _same(res.store, local_store)
    assert [s["rows"] for s in res.store.shards] == [s["rows"] for s in local_store.shards]


def test_a_killed_worker_is_retried_and_nothing_is_lost_or_duplicated(cluster, images, local_store, tmp_path):
    cluster.unlink()  # arm the hook: the first actor batch kills its own process
    res = embedkit.embed(images, tmp_path / "s", engine="ray", shard_rows=8, progress=False)
    assert cluster.exists(), "the fault hook never fired: no worker was killed"
    assert len(res.store) == 21 and len(set(res.store.paths)) == 21
    _same(res.store, local_store)


def test_kill_and_resume_redoes_only_unfinished_shards(cluster, images, local_store, tmp_path, monkeypatch):
    import embedkit.store.writer as writer

    real = writer.write_shard
    done = []

    def dies_after_one(*args, **kwargs):
        if done:
            raise Killed()
        done.append(real(*args, **kwargs))
        return done[-1]

    monkeypatch.setattr(writer, "write_shard", dies_after_one)
    with pytest.raises(Killed):
        embedkit.embed(images, tmp_path / "s", engine="ray", shard_rows=8, progress=False)
    monkeypatch.setattr(writer, "write_shard", real)
    assert not (tmp_path / "s" / "meta.json").exists()
    with pytest.raises(embedkit.StoreError, match="--resume"):
        embedkit.embed(images, tmp_path / "s", engine="ray", shard_rows=8, progress=False)
    res = embedkit.embed(images, tmp_path / "s", engine="ray", resume=True, progress=False)
    assert res.resumed and res.embedded + res.skipped == 22 - done[0]["files"]  # only the unfinished shards
    _same(res.store, local_store)


def test_device_cpu_reaches_the_workers(cluster, images, local_store, tmp_path, monkeypatch):
    """--device cpu on a local cluster: CPU workers that ask Ray for no GPU, fp32 codes as the local engine's."""
    import embedkit.runner.ray_engine as engine

    plans, plan = [], engine.worker_plan
    monkeypatch.setattr(engine, "worker_plan", lambda *a: plans.append(plan(*a)) or plans[-1])
    res = embedkit.embed(images, tmp_path / "s", engine="ray", device="cpu", shard_rows=8, progress=False)
    assert plans[0][0] == 0.0 and plans[0][2] == "cpu"  # no GPU per actor, actors on the CPU
    _same(res.store, local_store)
    assert res.store.identity["precision"] == local_store.identity["precision"] == "fp32"
    assert res.stages.decode > 0 and res.stages.forward > 0 and res.stages.write > 0  # the workers' seconds too


def test_ray_options_are_checked(cluster, images, tmp_path):
    with pytest.raises(embedkit.ConfigError, match="--num-gpus"):
        embedkit.embed(images, tmp_path / "a", engine="ray", num_gpus=1, progress=False)
    with pytest.raises(embedkit.ConfigError, match="decode"):
        embedkit.embed(images, tmp_path / "b", engine="ray", decode="device", progress=False)
    with pytest.raises(embedkit.ConfigError, match="--device cuda, but the Ray cluster has no GPUs"):
        embedkit.embed(images, tmp_path / "d", engine="ray", device="cuda", progress=False)
    with pytest.raises(embedkit.ConfigError, match="engine"):
        embedkit.embed(images, tmp_path / "c", engine="dask", progress=False)


def test_ray_data_reads_a_stores_item_folder_with_skipped_files(cluster, local_store):
    # the layout other tools rely on (embedkit.store.layout): one schema per folder, skipped files elsewhere
    assert local_store.skipped
    got = ray.data.read_parquet(str(local_store.path / "items")).to_pandas()
    assert sorted(got["path"]) == sorted(local_store.paths) and len(got) == len(local_store)
