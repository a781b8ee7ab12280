"""Hostile and messy input against `unite serve`, `unite index build`, `unite search` and `unite encode`.

    python benchmarks/hostility.py [--keep]

Everything runs on this machine: a tiny random checkpoint, a small corpus, servers on 127.0.0.1 only (each
started here, remembered by process id and stopped at the end, whatever happens), every request with a timeout
and the whole run under a deadline. Each probe prints one line: what was tried, what came back, and PASS when
that is what the hardening issue asks for (FAIL otherwise). Nothing here is a unit test; tests/ holds those.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from unite.testing import ServerProcess

DEADLINE_S = 600
_STARTED: list[ServerProcess] = []
RESULTS: list[tuple[str, bool, str]] = []


def report(probe: str, ok: bool, detail: str) -> None:
    RESULTS.append((probe, ok, detail))
    print(f"{'PASS' if ok else 'FAIL'}  {probe}: {detail}", flush=True)


def unite(*args: str, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "unite.cli.main", *args]
    environment = dict(os.environ, HF_HUB_OFFLINE="1", **(env or {}))
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment)


class Served(ServerProcess):
    """`unite serve` on 127.0.0.1 that follows its index every half second, remembered for :func:`stop_all`."""

    def __init__(self, index: Path, log: Path, *extra: str, env: dict | None = None) -> None:
        super().__init__(index, log, "--refresh-seconds", "0.5", *extra, env=env)
        _STARTED.append(self)


def stop_all(*_: object) -> None:
    """Kill, by process id, every server this script started that is still running."""
    for server in _STARTED:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()


def png_url(seed: int, size: int = 8) -> str:
    from unite.testing import make_image

    buffer = io.BytesIO()
    make_image(size, size, seed=seed).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


# ------------------------------------------------------------------------------------------------ set-up


def make_corpus(root: Path) -> tuple[Path, Path]:
    from unite.testing import make_image, make_tiny_checkpoint, make_video

    checkpoint = make_tiny_checkpoint(root / "model")
    corpus = root / "corpus"
    (corpus / "a").mkdir(parents=True)
    make_image(90, 130, seed=1).save(corpus / "a.png")
    make_image(61, 47, seed=2).save(corpus / "b.jpg")
    make_video(corpus / "clip.mp4", frames=24, fps=8, height=64, width=80, seed=3)
    (corpus / "a" / "note.txt").write_text("a cat asleep on a sofa")
    (corpus / "sea.txt").write_text("stormy clouds over the open sea")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside-secret-text: root password hunter2")
    make_image(50, 50, seed=9).save(outside / "outside.png")
    (corpus / "link-secret.txt").symlink_to(outside / "secret.txt")
    (corpus / "link-outside.png").symlink_to(outside / "outside.png")
    (corpus / "a" / "up").symlink_to("..")
    (corpus / "a" / "up2").symlink_to("../..")
    return checkpoint, corpus


# -------------------------------------------------------------------------------------------------- probes


def probe_folder_walk(root: Path, checkpoint: Path, corpus: Path) -> Path:
    index = root / "index"
    started = time.perf_counter()
    try:
        built = unite("index", "build", str(corpus), "--index", str(index), "--model", str(checkpoint), "--no-progress",
                      timeout=120)
    except subprocess.TimeoutExpired:
        report("folder walk with loop links", False, "the build hung (killed after 120 s)")
        raise
    seconds = time.perf_counter() - started
    report("folder walk with loop links", built.returncode == 0 and seconds < 120,
           f"exit {built.returncode} in {seconds:.1f} s: {built.stdout.strip()[-160:]}")
    stats = unite("index", "stats", "--index", str(index), "--json")
    items = json.loads(stats.stdout).get("total") if stats.returncode == 0 else None
    report("each real file once, links outside skipped", items == 5, f"{items} items indexed (expected 5)")
    return index


def probe_search_outside(server: Served) -> None:
    response = httpx.post(server.url + "/search", json={"text": "root password", "k": 50}, timeout=60)
    leaked = "outside-secret-text" in response.text
    report("text behind a link outside the folder never returned", not leaked, f"status {response.status_code}")
    thumb = httpx.get(server.url + "/thumbnail", params={"id": "link-outside.png"}, timeout=30)
    report("no thumbnail of an image outside the folder", thumb.status_code == 404, f"status {thumb.status_code}")
    absolute = str(server.log.parent)
    paths = sorted({hit["path"] for hit in response.json()["results"]})
    report("no absolute server path in /search hits",
           absolute not in response.text and not any(path.startswith("/") for path in paths),
           "paths: " + ", ".join(paths)[:120])


def probe_host(server: Served) -> None:
    evil = httpx.get(server.url + "/healthz", headers={"host": f"evil.example:{server.port}"}, timeout=10)
    good = httpx.get(server.url + "/healthz", headers={"host": f"localhost:{server.port}"}, timeout=10)
    report("Host: evil.example refused (DNS rebinding)", evil.status_code in (400, 421) and good.status_code == 200,
           f"evil {evil.status_code}, localhost {good.status_code}")


def probe_isolation(server: Served, trials: int = 5) -> None:
    async def trial() -> list[int]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            posts = [client.post("/v1/embeddings", json={"input": f"good request {i}"}) for i in range(8)]
            posts.append(client.post("/v1/embeddings", content=b'{"input": "abc \\ud800"}',
                                     headers={"content-type": "application/json"}))
            return [r.status_code for r in await asyncio.gather(*posts)]

    failures = bad = 0
    for _ in range(trials):
        statuses = asyncio.run(trial())
        failures += sum(status != 200 for status in statuses[:8])
        bad += statuses[8] != 400
    report("a lone surrogate fails only its own request", failures == 0 and bad == 0,
           f"{failures} of {8 * trials} good requests failed; the bad one got 400 in {trials - bad} of {trials}")
    search = httpx.post(server.url + "/search", content=b'{"text": "x \\udc00"}', timeout=30)
    report("a lone surrogate on /search gets 400", search.status_code == 400, f"status {search.status_code}")


def probe_budgets(server: Served) -> None:
    inputs = [[{"type": "image_url", "image_url": {"url": png_url(i)}}] * 120 for i in range(4)]
    body = json.dumps({"input": inputs})

    async def together() -> tuple[httpx.Response, httpx.Response, float, float]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            started = time.perf_counter()
            big = asyncio.create_task(client.post("/v1/embeddings", content=body))
            await asyncio.sleep(0.05)
            small_started = time.perf_counter()
            small = await client.post("/v1/embeddings", json={"input": "one line"})
            small_seconds = time.perf_counter() - small_started
            big_response = await big
            return big_response, small, time.perf_counter() - started, small_seconds

    rss = server.rss_mb()
    big, small, big_seconds, small_seconds = asyncio.run(together())
    grown = server.rss_mb() - rss
    report(f"{len(body) // 1024} KB body of 4 x 120 tiny PNGs", big.status_code == 413,
           f"{big.status_code} in {big_seconds:.2f} s ({big.json()['error'].get('limit')}), memory +{grown:.0f} MB")
    report("a one-line request sent meanwhile", small.status_code == 200 and small_seconds < 5,
           f"{small.status_code} after {small_seconds:.2f} s")
    started = time.perf_counter()
    texts = httpx.post(server.url + "/v1/embeddings", json={"input": ["word " * 4000] * 64}, timeout=120)
    report("64 texts of 20,000 characters", texts.status_code == 413,
           f"{texts.status_code} in {time.perf_counter() - started:.2f} s ({texts.json()['error'].get('limit')})")


def probe_bad_json(server: Served) -> None:
    deep = httpx.post(server.url + "/search", content=b"[" * 100_000, timeout=30)
    typed = httpx.post(server.url + "/v1/embeddings", content=b'{"input":[[{"type":["image_url"]}]]}', timeout=30)
    ids = httpx.post(server.url + "/v1/embeddings", json={"input": [[1, 2, 3]]}, timeout=30)
    report("100,000 nested [ on /search", deep.status_code == 400, f"{deep.status_code}")
    report('{"input":[[{"type":["image_url"]}]]}', typed.status_code == 400, f"{typed.status_code}")
    hint = "check_embedding_ctx_length=False" in ids.text
    report("token ids (LangChain default)", ids.status_code == 400 and hint, f"{ids.status_code}, hint given: {hint}")


def probe_auth(root: Path, index: Path) -> None:
    server = Served(index, root / "auth.log", "--api-key-env", "HOSTILITY_KEY", "--max-request-mb", "32",
                    env={"HOSTILITY_KEY": "s3cret"})
    try:
        head = (f"POST /v1/embeddings HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Type: application/json"
                f"\r\nContent-Length: {30 * 2**20}\r\n\r\n").encode()
        started = time.perf_counter()
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head + b"x" * 65536)
            answer = sock.recv(200)
        report("30 MB unauthenticated body", answer.startswith(b"HTTP/1.1 401"),
               f"{answer[:12].decode(errors='replace')} after {time.perf_counter() - started:.2f} s with 64 KB sent")
        bad = httpx.post(server.url + "/v1/embeddings", content=b"{not json", timeout=10)
        report("malformed JSON without a key", bad.status_code == 401, f"{bad.status_code}")
        payload = b'{"input": "' + b"A" * (30 * 2**20 - 20) + b'"}'
        headers = {"authorization": "Bearer s3cret", "content-type": "application/json"}
        rss = server.rss_mb()

        async def uploads() -> list[int]:
            async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
                posts = [client.post("/v1/embeddings", content=payload, headers=headers) for _ in range(10)]
                answers = await asyncio.gather(*posts, return_exceptions=True)
                return [a.status_code if isinstance(a, httpx.Response) else type(a).__name__ for a in answers]

        statuses = asyncio.run(uploads())
        grown = server.rss_mb() - rss
        report("10 concurrent 30 MB uploads", 503 in statuses,
               f"statuses {sorted(map(str, statuses))}, server memory +{grown:.0f} MB")
    finally:
        server.stop()


def probe_follow(server: Served, index: Path, corpus: Path, checkpoint: Path) -> None:
    from unite.testing import make_image

    before = httpx.get(server.url + "/healthz", timeout=10).json()
    old_thumb = httpx.get(server.url + "/thumbnail", params={"id": "a.png"}, timeout=30).content
    (corpus / "dog.txt").write_text("a dog running on a beach")
    (corpus / "sea.txt").unlink()
    make_image(90, 130, seed=77).save(corpus / "a.png")
    built = unite("index", "build", str(corpus), "--index", str(index), "--sync", "--no-progress")
    time.sleep(1.5)
    after = httpx.get(server.url + "/healthz", timeout=10).json()
    ids = [h["id"] for h in httpx.post(server.url + "/search", json={"text": "dog", "k": 50}, timeout=30).json()
           .get("results", [])]
    new_thumb = httpx.get(server.url + "/thumbnail", params={"id": "a.png"}, timeout=30)
    gone = httpx.get(server.url + "/thumbnail", params={"id": "sea.txt"}, timeout=30).status_code
    ok = (built.returncode == 0 and after.get("version") != before.get("version") and "dog.txt" in ids
          and "sea.txt" not in ids and new_thumb.content != old_thumb)
    report("a running server follows a rebuild (rerun without --model)", ok,
           f"version {before.get('version')} -> {after.get('version')}, items {before.get('items')} -> "
           f"{after.get('items')}, new id found: {'dog.txt' in ids}, deleted id gone: {'sea.txt' not in ids} "
           f"(thumbnail {gone}), changed thumbnail new: {new_thumb.content != old_thumb}")


def probe_weights(root: Path, index: Path, checkpoint: Path) -> None:
    moved = root / "moved-model"
    shutil.move(str(checkpoint), moved)
    gone = unite("search", "--index", str(index), "cat")
    report("model folder moved: clear error", gone.returncode != 0 and "--model" in gone.stderr,
           gone.stderr.strip()[-150:])
    pointed = unite("search", "--index", str(index), "--model", str(moved), "cat")
    report("--model points at the moved folder", pointed.returncode == 0, f"exit {pointed.returncode}")
    weights = next(moved.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    changed = unite("search", "--index", str(index), "--model", str(moved), "cat")
    report("weights replaced in place are refused", changed.returncode != 0 and "fingerprint" in changed.stderr,
           changed.stderr.strip()[-150:])


def probe_encode(root: Path, checkpoint: Path) -> None:
    lines = [b'{"text": "fine"}', b'{"text": "caf\xe9"}', b"[" * 20000, b'{"text": "abc \\ud800"}']
    items = root / "messy.jsonl"
    items.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    out = root / "messy.npy"
    run = unite("encode", str(items), "--model", str(checkpoint), "--output", str(out), "--on-error", "skip",
                "--no-progress")
    errors = root / "messy.errors.jsonl"
    failed = [json.loads(line)["line"] for line in errors.read_text().splitlines()] if errors.exists() else []
    report("unite encode --on-error skip on BOM, bad byte, 20,000 [, lone surrogate",
           run.returncode == 0 and failed == [2, 3, 4], f"exit {run.returncode}, failed lines {failed}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (stop_all(), sys.exit("hostility: deadline passed")))
    signal.alarm(DEADLINE_S)
    root = Path(tempfile.mkdtemp(prefix="unite-hostility-"))
    try:
        checkpoint, corpus = make_corpus(root)
        probe_encode(root, checkpoint)
        index = probe_folder_walk(root, checkpoint, corpus)
        server = Served(index, root / "server.log", "--batch-wait-ms", "50")
        try:
            probe_host(server)
            probe_search_outside(server)
            probe_isolation(server)
            probe_budgets(server)
            probe_bad_json(server)
            probe_follow(server, index, corpus, checkpoint)
        finally:
            server.stop()
        probe_auth(root, index)
        probe_weights(root, index, checkpoint)
    finally:
        stop_all()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    failed = [probe for probe, ok, _ in RESULTS if not ok]
    print(f"\n{len(RESULTS) - len(failed)} of {len(RESULTS)} probes pass")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
