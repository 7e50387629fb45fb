"""A local stand-in for the Hugging Face Hub's file URLs (``{endpoint}/datasets/{repo}/resolve/{revision}/{file}``),
the part ``huggingface_hub.hf_hub_download`` uses: HEAD with the commit, the LFS SHA-256 as ETag and the size;
GET with byte ranges. ``corrupt[file]`` flips a few bytes; ``stall_after[file] = n`` sends the first ``n``
bytes of that file and then hangs (a download interrupted half way); ``requests`` records (method, file, Range header)."""

from __future__ import annotations

import asyncio
import hashlib

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

COMMIT = "0123456789abcdef0123456789abcdef01234567"
files: dict[tuple[str, str], bytes] = {}  # (repo, filename) -> content
stall_after: dict[str, int] = {}
corrupt: dict[str, bool] = {}  # serve other bytes than the checksum says
requests: list[tuple[str, str, str | None]] = []
app = FastAPI()


def headers(content: bytes) -> dict[str, str]:
    return {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(content).hexdigest()}"', "Accept-Ranges": "bytes"}


@app.api_route("/datasets/{namespace}/{name}/resolve/{revision}/{filename}", methods=["GET", "HEAD"])
async def resolve(namespace: str, name: str, revision: str, filename: str, request: Request):
    content = files.get((f"{namespace}/{name}", filename))
    requests.append((request.method, filename, request.headers.get("range")))
    if content is None:
        return Response(status_code=404, headers={"X-Error-Code": "EntryNotFound"})
    if request.method == "HEAD":
        return Response(headers={**headers(content), "Content-Length": str(len(content))})
    start = 0
    if request.headers.get("range"):
        start = int(request.headers["range"].split("=")[1].split("-")[0])
    body = content[start:]
    if corrupt.get(filename):
        body = bytes(b ^ 1 for b in body[:16]) + body[16:]
    status = 206 if start else 200
    extra = {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"} if start else {}
    stall = stall_after.get(filename)

    async def stream():
        if stall is not None and start < stall:
            yield body[: stall - start]
            await asyncio.sleep(3600)  # the client is killed while it waits
        for lo in range(0, len(body), 1 << 16):
            yield body[lo : lo + (1 << 16)]

    return StreamingResponse(stream(), status_code=status, headers={**headers(content), **extra, "Content-Length": str(len(body))})
