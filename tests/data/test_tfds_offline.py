"""Fault class 7 of issue 15 (data side): an unprepared TFDS data set with no network fails at
once with the good error, instead of minutes of download retries."""

import functools
import socket

import pytest

pytest.importorskip("tensorflow", reason="the TFDS data sets need the tfds extra")
tfds = pytest.importorskip("tensorflow_datasets")

from tfm.data import sources  # noqa: E402
from tfm.data.config import DataConfig  # noqa: E402
from tfm.data.pipeline import build_pipeline  # noqa: E402


@pytest.mark.parametrize("dataset", ["tiny_shakespeare", "wmt14_ende"])
def test_offline_unprepared_tfds_fails_fast_without_downloading(dataset, tmp_path, monkeypatch):
    calls = []
    real = tfds.core.DatasetBuilder.download_and_prepare

    def unreachable(address, timeout=None, *a, **k):
        raise OSError(101, "Network is unreachable")

    @functools.wraps(real)  # TFDS's own downloader, spied on
    def download_and_prepare(self, *a, **k):  # what used to retry for 3.5 minutes
        calls.append(self.name)
        raise ConnectionError("retried for minutes")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", download_and_prepare)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(var, raising=False)
    cfg = DataConfig(dataset=dataset, tokenizer="char", tfds_data_dir=str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match=r"not prepared in .* network cannot be reached "
                                         r"\(storage.googleapis.com:443: Network is unreachable\)"):
        build_pipeline(cfg)
    assert calls == []


def test_a_reachable_network_is_not_reported(monkeypatch):
    class Conn:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: Conn())
    assert sources.network_unreachable() == ""
