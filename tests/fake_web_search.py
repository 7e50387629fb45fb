"""A local stand-in for the web search providers' APIs (Serper, SerpAPI, Brave), in their documented formats.

Queries steer it: ``rate limited`` → 429 (``Retry-After: 0``) on the first two calls, ``server error`` → 503
on the first call, ``broken`` → 500 always, ``slow`` → answers after 1.5 s, ``nothing`` → no results,
``answer`` → an answer box first. ``GET /calls`` counts the calls per query (and those refused for a wrong key).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

KEY = "test-key"
calls: Counter = Counter()
refused: Counter = Counter()  # calls with a wrong key, per query
app = FastAPI()


def results(q: str, n: int) -> list[dict]:
    if "nothing" in q:
        return []
    return [
        {"title": f"Result {i} for {q}", "snippet": f"Snippet {i} about {q}.", "link": f"https://example.com/{i}/{quote(q)}"}
        for i in range(n)
    ]


async def misbehave(q: str) -> JSONResponse | None:
    calls[q] += 1
    if "rate limited" in q and calls[q] <= 2:
        return JSONResponse({"message": "Too many requests"}, status_code=429, headers={"Retry-After": "0"})
    if "server error" in q and calls[q] == 1:
        return JSONResponse({"message": "unavailable"}, status_code=503)
    if "broken" in q:
        return JSONResponse({"message": "internal error"}, status_code=500)
    if "slow" in q:
        await asyncio.sleep(1.5)
    return None


@app.post("/search")  # Serper
async def serper(request: Request):
    body = await request.json()
    if request.headers.get("x-api-key") != KEY:
        return JSONResponse({"message": "Unauthorized."}, status_code=403)
    q, n = body["q"], int(body.get("num", 10))
    if (bad := await misbehave(q)) is not None:
        return bad
    out = {"searchParameters": {"q": q, "num": n}, "organic": [dict(r, position=i + 1) for i, r in enumerate(results(q, n))]}
    if "answer" in q:
        out["answerBox"] = {"title": f"Answer to {q}", "answer": "forty-two"}
    return out


@app.get("/search.json")  # SerpAPI
async def serpapi(q: str, api_key: str = "", num: int = 10, engine: str = ""):
    if api_key != KEY:
        return JSONResponse({"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"}, status_code=401)
    if (bad := await misbehave(q)) is not None:
        return bad
    found = results(q, num)
    if not found:
        return {"search_metadata": {"status": "Success"}, "error": "Google hasn't returned any results for this query."}
    return {"search_metadata": {"status": "Success"}, "organic_results": [dict(r, position=i + 1) for i, r in enumerate(found)]}


@app.get("/res/v1/web/search")  # Brave
async def brave(request: Request, q: str, count: int = 20):
    if request.headers.get("x-subscription-token") != KEY:
        refused[q] += 1
        return JSONResponse({"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID", "status": 422}}, status_code=422)
    if (bad := await misbehave(q)) is not None:
        return bad
    web = [
        {"title": r["title"], "url": r["link"], "description": r["snippet"].replace("Snippet", "<strong>Snippet</strong>")}
        for r in results(q, count)
    ]
    return {"type": "search", "query": {"original": q}, "web": {"type": "search", "results": web}}


@app.get("/calls")
async def call_counts():
    return {"calls": dict(calls), "refused": dict(refused)}
