"""`unite serve` through a real uvicorn process on 127.0.0.1: API shapes, search, limits and refusals."""

from __future__ import annotations

import asyncio
import base64
import io

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("lancedb")
httpx = pytest.importorskip("httpx")

from serving import Server, build_test_index  # noqa: E402

SECRET_TEXT = "zebra-secret-query-41"


@pytest.fixture(scope="module")
def server(tmp_path_factory, media_dir, encoder, legacy_checkpoint):
    folder = tmp_path_factory.mktemp("served")
    index = build_test_index(folder, media_dir, encoder, legacy_checkpoint)
    running = Server(index, folder / "server.log", "--max-request-mb", "1", "--max-items", "4")
    yield running
    running.stop()


def data_url(path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def test_healthz(server):
    health = httpx.get(server.url + "/healthz").json()
    # 3 images, clip.mp4 (3 s: whole), long.mp4 (6 s: two 3 s clips), 2 notes
    assert health["status"] == "ok" and health["items"] == 3 + 1 + 2 + 2 and health["auth"] is False


def test_embeddings_openai_shape_and_values(server, encoder, media_dir):
    image = data_url(media_dir / "a.png", "image/png")
    body = {
        "model": "anything",
        "input": [
            "a red circle",
            [{"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}],
            {"type": "video_url", "video_url": {"url": data_url(media_dir / "clip.mp4", "video/mp4")}},
        ],
    }
    response = httpx.post(server.url + "/v1/embeddings", json=body, timeout=60)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert payload["object"] == "list" and [d["index"] for d in payload["data"]] == [0, 1, 2]
    assert all(d["object"] == "embedding" for d in payload["data"]) and "usage" in payload
    vectors = np.array([d["embedding"] for d in payload["data"]], dtype=np.float32)
    expected = encoder.encode(
        [
            "a red circle",
            {"text": "What is this?", "image": str(media_dir / "a.png")},
            {"video": str(media_dir / "clip.mp4")},
        ],
        show_progress_bar=False,
    )
    assert np.allclose((vectors * expected).sum(1), 1.0, atol=1e-4)
    single = httpx.post(server.url + "/v1/embeddings", json={"input": "x", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(single["data"][0]["embedding"]), dtype="<f4")
    assert decoded.shape == (encoder.embedding_dim,) and np.linalg.norm(decoded) == pytest.approx(1.0, abs=1e-4)


def test_search_json_and_multipart_with_filter(server, media_dir):
    response = httpx.post(server.url + "/search", json={"text": "a cat asleep on a sofa", "k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert results[0]["id"] == "cat.txt" and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert results[0]["thumbnail"] is None
    videos = httpx.post(server.url + "/search", json={"text": "sea", "modality": "video", "k": 10}).json()["results"]
    assert videos and {hit["modality"] for hit in videos} == {"video"}
    assert {(h["id"], h["start"], h["end"]) for h in videos if h["id"].startswith("long.mp4")} == {
        ("long.mp4#t=0,3", 0.0, 3.0),
        ("long.mp4#t=3,6", 3.0, 6.0),
    }
    files = {"image": ("q.png", (media_dir / "a.png").read_bytes(), "image/png")}
    form = httpx.post(server.url + "/search", data={"modality": "image", "k": "2"}, files=files, timeout=60)
    assert form.status_code == 200, form.text
    hits = form.json()["results"]
    assert hits[0]["id"] == "a.png" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    thumb = httpx.get(server.url + hits[0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    from PIL import Image

    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320
    poster = httpx.get(server.url + "/thumbnail", params={"id": "long.mp4#t=3,6"})
    assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"text": "x", "image": "/etc/passwd"}, 400, "server-side paths are refused"),
        ({"text": "x", "image": "http://example.com/a.png"}, 400, "URLs are refused"),
        ({"text": "x", "video": "file:///etc/passwd"}, 400, "URLs are refused"),
        ({"text": "x", "image": "data:image/png;base64," + base64.b64encode(b"not an image").decode()}, 400, "image"),
        ({"text": "x", "k": 0}, 400, "k"),
        ({"text": "x", "modality": "audio"}, 400, "modality"),
        ({}, 400, "give a query"),
    ],
)
def test_search_refusals(server, body, status, words):
    response = httpx.post(server.url + "/search", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert server.alive()


def test_limits_and_corrupt_uploads(server, media_dir):
    too_many = httpx.post(server.url + "/v1/embeddings", json={"input": ["a"] * 5})
    assert too_many.status_code == 413 and "limit of 4" in too_many.json()["error"]["message"]
    large = httpx.post(server.url + "/v1/embeddings", json={"input": "a" * (2 * 2**20)})
    assert large.status_code == 413 and "larger than the limit" in large.json()["error"]["message"]
    truncated = (media_dir / "clip.mp4").read_bytes()[:3000]
    files = {"video": ("t.mp4", truncated, "video/mp4")}
    response = httpx.post(server.url + "/search", data={"text": "x"}, files=files, timeout=60)
    assert response.status_code == 400 and "video" in response.json()["error"]["message"]
    assert "/tmp" not in response.json()["error"]["message"]  # temporary paths never leak
    corrupt = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode()
    bad = httpx.post(server.url + "/v1/embeddings", json={"input": [[{"type": "image_url", "image_url": corrupt}]]})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith("input[0]")
    assert httpx.post(server.url + "/search", json={"text": SECRET_TEXT, "k": 1}).status_code == 200
    assert server.alive()


def test_thumbnails_only_for_indexed_items(server):
    for attempt in ("../../../../etc/passwd", "/etc/passwd", "a.png/../../x", "cat.txt", "nothing"):
        response = httpx.get(server.url + "/thumbnail", params={"id": attempt})
        assert response.status_code == 404, attempt
    assert httpx.get(server.url + "/thumbnail/../../etc/passwd").status_code == 404


def test_concurrent_requests_are_batched(server, encoder):
    texts = [f"query number {i}" for i in range(16)]

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            responses = await asyncio.gather(*(client.post("/v1/embeddings", json={"input": t}) for t in texts))
        return [r.json()["data"][0]["embedding"] for r in responses]

    before = httpx.get(server.url + "/healthz").json()["batched"]
    vectors = np.array(asyncio.run(fire()), dtype=np.float32)
    after = httpx.get(server.url + "/healthz").json()["batched"]
    expected = encoder.encode(texts, show_progress_bar=False)
    assert np.allclose((vectors * expected).sum(1), 1.0, atol=1e-4)  # each answer is its own query's
    assert after["requests"] - before["requests"] == 16 and after["batches"] - before["batches"] < 16


def test_logs_never_contain_uploaded_content(server):
    server.stop()  # flush the log (the fixture's stop after this is harmless)
    log = server.log.read_text()
    assert "POST /search" in log and SECRET_TEXT not in log and "iVBOR" not in log and "AAAA" not in log


def test_api_key_in_process(encoder):
    from fastapi.testclient import TestClient

    from unite.server import ServerConfig, create_app

    with TestClient(create_app(None, encoder, ServerConfig(api_key="k3y")), base_url="http://localhost") as client:
        assert client.get("/healthz").json()["auth"] is True
        assert client.post("/v1/embeddings", json={"input": "a"}).status_code == 401
        assert (
            client.post("/v1/embeddings", json={"input": "a"}, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        ok = client.post("/v1/embeddings", json={"input": "a"}, headers={"Authorization": "Bearer k3y"})
        assert ok.status_code == 200 and len(ok.json()["data"][0]["embedding"]) == encoder.embedding_dim
