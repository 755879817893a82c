#!/usr/bin/env python3
"""SSE token-stream benchmark: the project (`ours`) and a bare Django async view (`bare`) under the same load.

One run starts a private redis-server, then for each target its W workers on free loopback ports.
Each round opens N concurrent `POST /api/assistant/stream` requests of T tokens (echo backend, no
delay), spread round-robin over the workers, and reads every stream to its `done`, checking each
token index once and in order; for ours it then resumes up to 50 of those streams on the other
worker with `Last-Event-ID: <id>:<T/2>`. Ours is measured through each of its APIs (--apis), on the
same workers in the same run: `native` (the above), `chat` (`POST /v1/chat/completions` streamed,
resumed with `?format=openai`), `responses` (`POST /v1/responses` streamed, resumed with
`GET /v1/responses/<id>?stream=true&starting_after=<n>`) and `tools` (a Chat Completions stream of
one tool call whose arguments come in T pieces, from a fake OpenAI upstream run by this script in
a process of its own, as a model of LLM_MODELS; each piece is a word and a space, so "tokens" are
argument pieces there). Prints one markdown table and writes the JSON to
bench/results/<UTC timestamp>_sse.json. Loopback only; every wait is bounded; every process started
here is stopped at the end, also on Ctrl-C or an error. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import uvloop
from common import (
    CLK_TCK,
    HOST,
    NCPU,
    ROOT,
    Procs,
    Target,
    asgi_argv,
    cpu_ticks,
    fmt,
    free_ports,
    machine_ticks,
    md_table,
    mono,
    mono_ns,
    ours_env,
    ours_prepare,
    pctl_ms,
    session,
    shown,
    start_redis,
    tree_cpu_ticks,
    wait_listening,
)

# The echo backend repeats the message's words, one token each (plus a space), up to max_tokens.
MESSAGE = "the quick brown fox jumps over the lazy dog while every token streams across two workers"
WORDS = MESSAGE.split()
TOKEN_RE = re.compile(rb'event: token\ndata: \{"index":(\d+),')
CODE_RE = re.compile(rb'"code": ?"(\w{1,60})"')  # of an error event or an error response
MARK = b"event: token\n"
DONE = b"event: done\ndata: "
ERROR = b"event: error\ndata: "
BACKLOG = 2048  # the listen backlog of deploy/serve.py; Twisted's default (50) drops SYNs of a 200-stream burst
APIS = ("native", "chat", "responses", "tools")
TOOLS_MODEL = "tools"  # the LLM_MODELS name of the fake upstream of the `tools` rows
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
# The arguments of the upstream's tool call: this, then T pieces of a word and a space, then ARGS_END.
ARGS_START, ARGS_END = '{"text":"', '"}'
# Log events of a `tools` stream before its first word piece (the call's id and name, ARGS_START),
# and of a Responses stream before its first text delta (created, in_progress, item and part added).
TOOLS_LEAD, RESPONSES_LEAD = 2, 3


# ------------------------------------------------------------------ targets


def ours_target(a: argparse.Namespace, tmp: Path, redis_url: str, upstream_port: int | None) -> Target:
    models: dict[str, dict[str, str]] = {"echo": {}}
    if upstream_port is not None:
        models[TOOLS_MODEL] = {"base_url": f"http://{HOST}:{upstream_port}/v1"}
    env = ours_env(
        tmp,
        redis_url,
        LLM_BACKEND="echo",
        LLM_MODELS=orjson.dumps(models).decode(),
        LLM_TOKEN_DELAY_MS="0",
        LLM_MAX_CONCURRENT="100000",
        LLM_MAX_CONCURRENT_PER_USER="100000",
    )
    env.pop("LLM_TOKENS_PER_DAY", None)  # no daily budget
    argv = asgi_argv(a.server, "config.asgi:application", backlog=BACKLOG)
    return Target("ours", f"the project, {a.server}", env, argv, contract=True)


def bare_target() -> Target:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "bench"), "DJANGO_SETTINGS_MODULE": "bare_sse.settings"}
    argv = asgi_argv("daphne", "bare_sse.asgi:application", backlog=BACKLOG)
    return Target("bare", "bare Django async view, daphne", env, argv, contract=False)


# ------------------------------------------------------------------ client


class Rec:
    """One request: what arrived, when (monotonic ns), and the first thing found wrong."""

    __slots__ = ("done", "error", "first", "next", "port", "status", "stream_id", "t_done", "t_first", "t_req", "tokens", "user")

    def __init__(self, port: int, user: int, first: int = 0) -> None:
        self.port, self.user, self.first, self.next = port, user, first, first
        self.stream_id = ""
        self.status = self.t_req = self.t_first = self.t_done = self.tokens = 0
        self.done = False
        self.error: str | None = None

    def ok(self, total: int) -> bool:
        return self.done and self.error is None and self.tokens == total - self.first


class SSEReader(asyncio.Protocol):
    """One HTTP/1.1 request (`Connection: close`) whose text/event-stream body is checked as it arrives:
    chunked transfer coding undone, events cut at blank lines, token indexes consecutive from
    `rec.first`, and one `done` whose usage and content are those of `total` echo tokens."""

    def __init__(self, req: bytes, rec: Rec, fut: asyncio.Future[None], total: int, content: bytes) -> None:
        self.req, self.rec, self.fut, self.total, self.content = req, rec, fut, total, content
        self.transport: Any = None
        self.head = b""
        self.in_body = self.chunked = self.last_chunk = False
        self.cbuf = b""  # an incomplete chunk-size line
        self.data_left = self.crlf_left = 0
        self.tail = b""  # an incomplete event

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.rec.t_req = mono_ns()
        transport.write(self.req)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.fut.done():
            self.fail(f"connection closed before done ({exc or 'EOF'}, {self.rec.tokens} tokens)")

    def fail(self, error: str) -> None:
        if self.rec.error is None:
            self.rec.error = error
        self.end()

    def end(self) -> None:
        if not self.fut.done():
            self.fut.set_result(None)
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = mono_ns()
        if not self.in_body:
            head = self.head + data
            i = head.find(b"\r\n\r\n")
            if i < 0:
                self.head = head
                if len(head) > 65536:
                    self.fail("response head over 64 KiB")
                return
            self.in_body, self.head = True, b""
            lines = head[:i].decode("latin-1").split("\r\n")
            try:
                self.rec.status = int(lines[0].split(" ", 2)[1])
            except (IndexError, ValueError):
                self.fail(f"bad status line {lines[0][:80]!r}")
                return
            for line in lines[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "transfer-encoding":
                    self.chunked = "chunked" in value.lower()
                elif name == "x-stream-id":
                    self.rec.stream_id = value.strip()
            data = head[i + 4 :]
            if self.rec.status != 200:
                code = CODE_RE.search(data)
                self.fail(f"HTTP {self.rec.status}" + (f" {code[1].decode()}" if code else ""))
                return
        if self.chunked:
            data = self.dechunk(data)
        if data:
            self.events(data, now)

    def dechunk(self, data: bytes) -> bytes:
        if self.last_chunk:  # trailers, the final CRLF
            return b""
        buf = self.cbuf + data if self.cbuf else data
        out: list[bytes] = []
        pos, n = 0, len(buf)
        while pos < n:
            if self.data_left:
                take = min(self.data_left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self.data_left -= take
            elif self.crlf_left:
                take = min(self.crlf_left, n - pos)
                pos += take
                self.crlf_left -= take
            else:
                i = buf.find(b"\r\n", pos)
                if i < 0:
                    break
                try:
                    size = int(buf[pos:i].split(b";", 1)[0], 16)
                except ValueError:
                    self.fail(f"bad chunk size line {buf[pos:i][:40]!r}")
                    return b""
                pos = i + 2
                if size == 0:  # the last chunk; the server closes (Connection: close)
                    pos, self.last_chunk = n, True
                    break
                self.data_left, self.crlf_left = size, 2
        self.cbuf = buf[pos:] if pos < n else b""
        return out[0] if len(out) == 1 else b"".join(out)

    def events(self, data: bytes, now: int) -> None:
        s = self.tail + data if self.tail else data
        cut = s.rfind(b"\n\n")
        if cut < 0:
            self.tail = s
            return
        block, self.tail = s[: cut + 2], s[cut + 2 :]
        rec = self.rec
        idx = TOKEN_RE.findall(block)
        if idx:
            if not rec.t_first:
                rec.t_first = now
            got = list(map(int, idx))
            if got != list(range(rec.next, rec.next + len(got))) and rec.error is None:
                rec.error = f"token indexes {got[0]}..{got[-1]} where {rec.next}.. were expected"
            rec.tokens += len(got)
            rec.next = got[-1] + 1
        if block.count(MARK) != len(idx) and rec.error is None:
            rec.error = "a token event that does not parse"
        if ERROR in block:
            i = block.index(ERROR) + len(ERROR)
            code = CODE_RE.search(block, i)
            self.fail("error event" + (f" {code[1].decode()}" if code else ""))
            return
        d = block.find(DONE)
        if d < 0:
            return
        rec.t_done, rec.done = now, True
        i = d + len(DONE)
        try:
            done = orjson.loads(block[i : block.find(b"\n", i)])
            # usage is an estimate (a word at least one token, streaming.services.count_tokens): at least one a word.
            good = done["usage"]["completion_tokens"] >= self.total and done["content"].encode() == self.content
        except (ValueError, KeyError, TypeError, AttributeError):
            good = False
        if not good:
            self.fail("done event with the wrong usage or content")
        elif rec.next != self.total or rec.tokens != self.total - rec.first:
            self.fail(f"done after {rec.tokens} tokens (last index {rec.next - 1})")
        else:
            self.end()


class OpenAIReader(SSEReader):
    """A `/v1` stream (Chat Completions chunks or Responses events), read as SSEReader reads ours:
    its text pieces counted (each word carries one space, so spaces are tokens), the time of the
    first, and its end (`[DONE]`, or a Responses final event) checked: a whole stream's text must
    be the echo's `content` (a `tools` stream's arguments ARGS_START + content + ARGS_END), a
    resumed one's must hold exactly the tokens after `rec.first`."""

    def __init__(self, req: bytes, rec: Rec, fut: asyncio.Future[None], total: int, content: bytes, api: str) -> None:
        super().__init__(req, rec, fut, total, content)
        self.api = api
        self.text: list[str] = []

    def events(self, data: bytes, now: int) -> None:
        s = self.tail + data if self.tail else data
        cut = s.rfind(b"\n\n")
        if cut < 0:
            self.tail = s
            return
        block, self.tail = s[: cut + 2], s[cut + 2 :]
        rec = self.rec
        for line in block.split(b"\n"):
            if not line.startswith(b"data: "):
                continue
            if line == b"data: [DONE]":
                self.finish(now)
                return
            try:
                obj = orjson.loads(line[6:])
                piece, end = self.piece(obj)
            except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                self.fail(f"a data line that is not a {self.api} event: {line[:80]!r}")
                return
            if piece:
                if not rec.t_first:
                    rec.t_first = now
                rec.tokens += piece.count(" ")
                self.text.append(piece)
            if end:
                self.finish(now)
                return

    def piece(self, obj: dict[str, Any]) -> tuple[str, bool]:
        """The text a chunk or event adds, and whether it ends the stream; KeyError and the like for a malformed one."""
        if "error" in obj and self.api != "responses":
            raise ValueError(obj["error"].get("code"))
        if self.api == "responses":
            kind = obj["type"]
            if kind == "response.failed":
                raise ValueError(obj["response"]["error"]["message"])
            if kind == "response.output_text.delta":
                return obj["delta"], False
            return "", kind in ("response.completed", "response.incomplete")
        choices = obj["choices"]
        if not choices:  # the usage chunk
            return "", False
        delta = choices[0]["delta"]
        calls = delta.get("tool_calls") or []
        return (delta.get("content") or "") + "".join(call["function"].get("arguments") or "" for call in calls), False

    def finish(self, now: int) -> None:
        rec = self.rec
        rec.t_done, rec.done = now, True
        text = "".join(self.text).encode()
        if rec.first == 0 and self.api == "tools":
            good = text == ARGS_START.encode() + self.content + ARGS_END.encode()
        elif rec.first == 0:
            good = text == self.content
        else:
            good = rec.tokens == self.total - rec.first
        if not good or rec.tokens != self.total - rec.first:
            self.fail(f"the end after {rec.tokens} tokens, text {text[:60]!r}…")
        else:
            self.end()


def http_request(method: str, path: str, port: int, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: text/event-stream", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def follow_sse(reader: Any, port: int, deadline: float) -> str | None:
    """Connect ``reader(future)`` (an SSEReader-like protocol that resolves the future at
    the stream's end) to ``port`` and wait for the end until ``deadline``. Returns None,
    ``"connect: <error>"`` when the connection failed, or ``"timeout"`` (the connection
    is then aborted); the callers word their own records."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    proto = reader(fut)
    try:
        tr, _ = await asyncio.wait_for(loop.create_connection(lambda: proto, HOST, port), max(0.1, deadline - mono()))
    except (OSError, TimeoutError) as e:
        return f"connect: {type(e).__name__}: {e}"
    try:
        await asyncio.wait_for(fut, max(0.1, deadline - mono()))
    except TimeoutError:
        tr.abort()
        return "timeout"
    return None


async def read_streams(
    jobs: list[tuple[Rec, bytes]], total: int, timeout: float, concurrency: int = 0, on_end: Any = None, api: str = "native"
) -> None:
    """Send every request and read its stream to the end; a request not done by `timeout` is aborted.
    `on_end()` is called as each stream reaches its `done` event."""
    content = "".join(WORDS[i % len(WORDS)] + " " for i in range(total)).encode()
    sem = asyncio.Semaphore(concurrency or len(jobs) or 1)
    deadline = mono() + timeout

    def reader(rec: Rec, req: bytes, fut: asyncio.Future[None]) -> SSEReader:
        if api == "native":
            return SSEReader(req, rec, fut, total, content)
        return OpenAIReader(req, rec, fut, total, content, api)

    async def one(rec: Rec, req: bytes) -> None:
        async with sem:
            failed = await follow_sse(lambda fut: reader(rec, req, fut), rec.port, deadline)
            if failed == "timeout":
                got = f"HTTP {rec.status}, {rec.tokens} tokens" if rec.status else "no response"
                rec.error = rec.error or f"timeout after {timeout:g} s ({got})"
            elif failed is not None:
                rec.error = failed[:200]
            elif on_end is not None and rec.done:
                on_end()

    await asyncio.gather(*(one(rec, req) for rec, req in jobs))


# ------------------------------------------------------------------ rounds


class Bench:
    """The rounds of one target. Single event loop, no locks."""

    def __init__(self, a: argparse.Namespace, t: Target, redis_pid: int) -> None:
        self.a, self.t, self.redis_pid = a, t, redis_pid

    def post_jobs(self, n: int, tokens: int, api: str = "native") -> list[tuple[Rec, bytes]]:
        user_message = [{"role": "user", "content": MESSAGE}]
        path, body = {
            "native": ("/api/assistant/stream", {"message": MESSAGE, "max_tokens": tokens}),
            "chat": ("/v1/chat/completions", {"model": "echo", "messages": user_message, "stream": True, "max_tokens": tokens}),
            "responses": ("/v1/responses", {"model": "echo", "input": MESSAGE, "stream": True, "max_output_tokens": tokens}),
            "tools": (
                "/v1/chat/completions",
                {"model": TOOLS_MODEL, "messages": user_message, "stream": True, "max_tokens": tokens, "tools": [TOOL]},
            ),
        }[api]
        raw = orjson.dumps(body)
        jobs = []
        for i in range(n):
            rec = Rec(self.t.ports[i % len(self.t.ports)], i)  # round-robin over the workers; users i % 20
            jobs.append((rec, http_request("POST", path, rec.port, self.t.headers(i) or [], raw)))
        return jobs

    def resume_jobs(self, recs: list[Rec], after: int, api: str = "native") -> list[tuple[Rec, bytes]]:
        """A resume of each stream on the next worker after the one that produced it (the other one of two),
        after its token number `after`: the same position in each API's own numbering."""
        ports = self.t.ports
        jobs = []
        for r in recs:
            port = ports[(ports.index(r.port) + 1) % len(ports)]
            rec = Rec(port, r.user, first=after)
            rec.stream_id = r.stream_id
            headers = self.t.headers(r.user) or []
            if api == "responses":
                path = f"/v1/responses/resp_{r.stream_id}?stream=true&starting_after={RESPONSES_LEAD + after}"
            else:
                seq = after + TOOLS_LEAD if api == "tools" else after
                headers = [*headers, ("Last-Event-ID", f"{r.stream_id}:{seq}")]
                path = f"/api/streams/{r.stream_id}/events" + ("" if api == "native" else "?format=openai")
            jobs.append((rec, http_request("GET", path, port, headers)))
        return jobs

    def snap(self) -> tuple[float, list[int], int, int, tuple[int, int]]:
        workers = [tree_cpu_ticks(p.pid) for p in self.t.procs]
        return mono(), workers, cpu_ticks(self.redis_pid), cpu_ticks(os.getpid()), machine_ticks()

    async def settle(self, window: float = 0.25, cap: float = 10.0) -> float:
        """Until the workers are idle (each under ~10% of a core over `window`), at most `cap` seconds:
        what a round set going (the replies stored after `done`) is finished before the next phase."""
        t0 = mono()
        before = [tree_cpu_ticks(p.pid) for p in self.t.procs]
        while mono() - t0 < cap:
            await asyncio.sleep(window)
            now = [tree_cpu_ticks(p.pid) for p in self.t.procs]
            if all(y - x <= 0.1 * window * CLK_TCK for x, y in zip(before, now, strict=True)):
                break
            before = now
        return round(mono() - t0, 2)

    @staticmethod
    def cpu(c0: tuple[Any, ...], c1: tuple[Any, ...], c2: tuple[Any, ...], tokens: int) -> dict[str, Any]:
        """CPU % over the round (c0..c1); CPU time per token over the round and its aftermath (c0..c2)."""
        dt = max(c1[0] - c0[0], 1e-6)
        workers = [round(100 * (y - x) / CLK_TCK / dt, 1) for x, y in zip(c0[1], c1[1], strict=True)]
        redis_pct = round(100 * (c1[2] - c0[2]) / CLK_TCK / dt, 1)
        me = round(100 * (c1[3] - c0[3]) / CLK_TCK / dt, 1)
        busy = 100 * NCPU * (c1[4][0] - c0[4][0]) / max(1, c1[4][1] - c0[4][1])
        srv_s = sum(y - x for x, y in zip(c0[1], c2[1], strict=True)) / CLK_TCK
        redis_s = (c2[2] - c0[2]) / CLK_TCK
        return {
            "server_cpu_pct": workers,
            "redis_cpu_pct": redis_pct,
            "loadgen_cpu_pct": me,
            "other_cpu_pct": round(max(0.0, busy - sum(workers) - redis_pct - me), 1),
            "server_cpu_s": round(srv_s, 3),
            "server_cpu_us_per_token": round(1e6 * srv_s / tokens, 2) if tokens else None,
            "redis_cpu_us_per_token": round(1e6 * redis_s / tokens, 2) if tokens else None,
        }

    @staticmethod
    def errors(recs: list[Rec], total: int) -> dict[str, Any]:
        bad = [r for r in recs if not r.ok(total)]
        reasons = Counter((r.error or "no done event")[:120] for r in bad)
        return {"errors": len(bad), "error_reasons": dict(reasons.most_common(5))}

    async def quiet(self) -> tuple[float, float]:
        """Until the rest of the machine uses under --quiet-cpu % of a core for a second, at most
        --quiet-wait seconds (the machine may be shared): (seconds waited, that CPU %)."""
        t0 = mono()
        while True:
            c0 = self.snap()
            await asyncio.sleep(1.0)
            c1 = self.snap()
            other = self.cpu(c0, c1, c1, 0)["other_cpu_pct"]
            if other < self.a.quiet_cpu or mono() - t0 >= self.a.quiet_wait:
                return round(mono() - t0 - 1.0, 1), other

    async def one_round(self, n: int, rep: int, api: str = "native") -> dict[str, Any]:
        a = self.a
        await asyncio.sleep(a.gap)
        quiet_s, quiet_other = await self.quiet()
        jobs = self.post_jobs(n, a.tokens, api)
        recs = [r for r, _ in jobs]
        gc.collect()
        gc.disable()
        try:
            c0 = c1 = self.snap()
            t0 = mono_ns()

            def on_end() -> None:  # the CPU window ends with the last `done`, as the tokens/s window does
                nonlocal c1
                c1 = self.snap()

            await read_streams(jobs, a.tokens, a.timeout, on_end=on_end, api=api)
            t1 = max([r.t_done for r in recs if r.t_done] or [mono_ns()])
        finally:
            gc.enable()
        settle_s = await self.settle()
        c2 = self.snap()
        tokens = sum(r.tokens for r in recs)
        ttft = sorted(r.t_first - r.t_req for r in recs if r.t_first)
        dur = sorted(r.t_done - r.t_req for r in recs if r.t_done)
        res: dict[str, Any] = {
            "api": api,
            "streams": n,
            "rep": rep,
            "tokens": tokens,
            "wall_ms": round((t1 - t0) / 1e6, 1),
            "tokens_s": round(tokens / max(t1 - t0, 1) * 1e9, 1),
            "ttft_p50_ms": pctl_ms(ttft, 0.5),
            "ttft_p99_ms": pctl_ms(ttft, 0.99),
            "ttft_max_ms": pctl_ms(ttft, 1.0),
            "stream_p50_ms": pctl_ms(dur, 0.5),
            "stream_max_ms": pctl_ms(dur, 1.0),
            **self.errors(recs, a.tokens),
            **self.cpu(c0, c1, c2, tokens),
            "settle_s": settle_s,
            "quiet_wait_s": quiet_s,
            "other_cpu_pct_before": quiet_other,
        }
        if self.t.name == "ours":
            res["resume"] = await self.resume([r for r in recs if r.ok(a.tokens)][: a.resumes], api)
        rs = res.get("resume") or {}
        print(
            f"  {self.t.name} {api} {n:>4} streams #{rep}: {res['tokens_s']:>10,.0f} tokens/s in {res['wall_ms']:,.0f} ms"
            f"  TTFT p50 {res['ttft_p50_ms']} p99 {res['ttft_p99_ms']} ms"
            + (f"  resume p50 {rs.get('p50_ms')} p99 {rs.get('p99_ms')} ms ({rs.get('errors')} err)" if rs else "")
            + f"  cpu srv {res['server_cpu_pct']} redis {res['redis_cpu_pct']} gen {res['loadgen_cpu_pct']}"
            f" other {res['other_cpu_pct']} (waited {quiet_s} s for < {a.quiet_cpu:g})"
            f"  {res['server_cpu_us_per_token']} us/token  errors {res['errors']}"
            + (f" {res['error_reasons']}" if res["errors"] else ""),
            file=sys.stderr,
            flush=True,
        )
        return res

    async def resume(self, streams: list[Rec], api: str = "native") -> dict[str, Any]:
        """Resume each finished stream from the middle on the other worker: request -> first replayed token."""
        a = self.a
        after = a.tokens // 2 if a.resume_at is None else a.resume_at
        jobs = self.resume_jobs(streams, after, api)
        recs = [r for r, _ in jobs]
        await read_streams(jobs, a.tokens, a.timeout, concurrency=a.resume_concurrency, api=api)
        await self.settle()
        lat = sorted(r.t_first - r.t_req for r in recs if r.t_first)
        return {
            "resumes": len(recs),
            "last_event_id": after,
            "concurrency": a.resume_concurrency,
            "p50_ms": pctl_ms(lat, 0.5),
            "p99_ms": pctl_ms(lat, 0.99),
            "max_ms": pctl_ms(lat, 1.0),
            **self.errors(recs, a.tokens),
        }

    async def run(self) -> dict[str, Any]:
        a = self.a
        # Warm-up, unjudged: URL resolution, database and Redis connections, the first of everything.
        apis = a.apis if self.t.name == "ours" else ["native"]
        n = min(10, *a.streams)
        warm: dict[str, Any] = {}
        for api in apis:
            jobs = self.post_jobs(n, 50, api)
            await read_streams(jobs, 50, a.timeout, api=api)
            warm[api] = self.errors([r for r, _ in jobs], 50)
            if self.t.name == "ours":
                rjobs = self.resume_jobs([r for r, _ in jobs if r.ok(50)][:2], 25, api)
                await read_streams(rjobs, 50, a.timeout, api=api)
                warm[api]["resume_errors"] = self.errors([r for r, _ in rjobs], 50)["errors"]
        await self.settle()
        rounds = []
        # The APIs take turns within each repetition, so that a busy spell of the machine is
        # shared among them rather than landing on one (their ratios are what the run compares).
        for streams in a.streams:
            for rep in range(a.repeat):
                for api in apis:
                    rounds.append(await self.one_round(streams, rep, api))
        return {"warmup": warm, "rounds": rounds}


# ------------------------------------------------------------------ report


API_LABELS = {
    "chat": "/v1/chat/completions",
    "responses": "/v1/responses",
    "tools": "/v1/chat/completions, a tool call from an upstream",
}


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(rounds, key=lambda r: r["tokens_s"])[len(rounds) // 2]


def table(a: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    head = (
        "target",
        "streams",
        "tokens/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "resume p50 ms",
        "resume p99 ms",
        "srv CPU % per worker",
        "srv CPU \u00b5s/token",
        "redis CPU %",
        "errors",
    )
    rows = []
    for r in results:
        apis = a.apis if r["target"] == "ours" else ["native"]
        for api, n in ((api, n) for n in a.streams for api in apis):
            rounds = [x for x in r.get("rounds", []) if x["streams"] == n and x.get("api", "native") == api]
            label = f"{r['target']} ({r['desc']})" + ("" if api == "native" else f", {API_LABELS[api]}")
            if not rounds:
                rows.append((label, str(n), *["-"] * (len(head) - 3), r.get("error", "-")))
                continue
            m = median_round(rounds)
            tps = fmt(m["tokens_s"], 0)
            if len(rounds) > 1:
                tps += f" ({fmt(min(x['tokens_s'] for x in rounds), 0)}\u2013{fmt(max(x['tokens_s'] for x in rounds), 0)})"
            rs = m.get("resume") or {}
            errs = sum(x["errors"] for x in rounds)
            rerrs = sum((x.get("resume") or {}).get("errors", 0) for x in rounds)
            streams_total = n * len(rounds)
            err = f"{errs}/{streams_total}"
            if "resume" in m:
                err += f", resumes {rerrs}/{sum(x['resume']['resumes'] for x in rounds)}"
            reasons: Counter[str] = Counter()
            for x in rounds:
                reasons.update(x["error_reasons"])
                reasons.update((x.get("resume") or {}).get("error_reasons", {}))
            if reasons:
                err += " (" + ", ".join(f"{k} \u00d7{v}" for k, v in reasons.most_common(3)) + ")"
            rows.append(
                (
                    label,
                    str(n),
                    tps,
                    fmt(m["ttft_p50_ms"], 1),
                    fmt(m["ttft_p99_ms"], 1),
                    fmt(rs.get("p50_ms"), 1),
                    fmt(rs.get("p99_ms"), 1),
                    " / ".join(fmt(x, 0) for x in m["server_cpu_pct"]),
                    fmt(m["server_cpu_us_per_token"], 1),
                    fmt(m["redis_cpu_pct"], 0) if r["target"] == "ours" else "-",
                    err,
                )
            )
    return md_table(head, rows)


# ------------------------------------------------------------------ main


# ------------------------------------------------------------------ the fake upstream of the `tools` rows


def upstream_chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "choices": [choice]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


async def upstream_answer(writer: asyncio.StreamWriter, tokens: int) -> None:
    """One streamed reply: a tool call whose arguments come in `tokens` + 2 pieces, 32 to a
    write with an `asyncio.sleep(0)` between, as the echo backend batches with no delay."""
    pieces = [ARGS_START, *(WORDS[i % len(WORDS)] + " " for i in range(tokens)), ARGS_END]
    call = {"index": 0, "id": "call_bench", "type": "function", "function": {"name": "lookup", "arguments": ""}}
    first = {"tool_calls": [call]}
    events = [upstream_chunk({"role": "assistant", **first})]
    events += [upstream_chunk({"tool_calls": [{"index": 0, "function": {"arguments": p}}]}) for p in pieces]
    events += [upstream_chunk({}, "tool_calls"), b"data: [DONE]\n\n"]
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
    for i in range(0, len(events), 32):
        data = b"".join(events[i : i + 32])
        writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        await writer.drain()
        await asyncio.sleep(0)
    writer.write(b"0\r\n\r\n")
    await writer.drain()


async def upstream_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Requests on one kept-alive connection (httpx pools them), until the client closes it."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            body = orjson.loads(await reader.readexactly(int(length[1]) if length else 0) or b"{}")
            await upstream_answer(writer, int(body.get("max_tokens") or 10))
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def upstream_serve(port: int) -> None:
    server = await asyncio.start_server(upstream_connection, HOST, port, backlog=BACKLOG)
    async with server:
        await server.serve_forever()


def start_upstream(procs: Procs) -> tuple[Any, int]:
    """This script as the fake upstream (`--upstream-port`), in a process of its own: its CPU is
    then neither the workers' nor the load generator's."""
    port = free_ports(1)[0]
    argv = [sys.executable, str(Path(__file__).resolve()), "--upstream-port", str(port)]
    proc = procs.start("upstream", argv, dict(os.environ))
    wait_listening(procs, proc, port, "fake upstream")
    return proc, port


def run(a: argparse.Namespace, tmp: Path, procs: Procs) -> list[dict[str, Any]]:
    rproc, redis_url, rcli = start_redis(procs, tmp)
    upstream, upstream_port = start_upstream(procs) if "tools" in a.apis and "ours" in a.targets else (None, None)
    results = []
    for name in a.targets:
        t = ours_target(a, tmp, redis_url, upstream_port) if name == "ours" else bare_target()
        t0 = mono()
        print(f"## {t.name}: {t.desc}, {a.workers} workers", file=sys.stderr, flush=True)
        if t.name == "ours":
            ours_prepare(t)
        t.start(procs, a.workers)
        try:
            res: dict[str, Any] = {"target": t.name, "desc": t.desc, "ports": t.ports}
            budget = len(a.streams) * a.repeat * 2 * (a.timeout + 30) + 60
            res.update(uvloop.run(asyncio.wait_for(Bench(a, t, rproc.pid).run(), budget)))
            if any(x["errors"] or (x.get("resume") or {}).get("errors") for x in res["rounds"]):
                res["worker_log_tails"] = {f"w{i}": procs.tail(p, 40) for i, p in enumerate(t.procs)}
        finally:
            procs.stop(t.procs)
            rcli.flushall()
        res["wall_s"] = round(mono() - t0, 1)
        results.append(res)
    if upstream is not None:
        procs.stop([upstream])
    rcli.close()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="ours,bare", help="comma list of ours, bare (default: both, in that order)")
    ap.add_argument("--apis", default=",".join(APIS), help=f"ours' APIs measured, comma list of {', '.join(APIS)}")
    ap.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)  # run as the fake upstream (start_upstream)
    ap.add_argument("--workers", "-w", type=int, default=2, help="server processes per target")
    ap.add_argument("--server", choices=("daphne", "uvicorn", "granian"), default="daphne", help="ASGI server for ours")
    ap.add_argument("--streams", default="50,200", help="concurrent streams of each round, comma list")
    ap.add_argument("--tokens", type=int, default=500, help="tokens per stream (max_tokens)")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per --streams value; the table shows the median")
    ap.add_argument("--resumes", type=int, default=50, help="streams of each round resumed (ours)")
    ap.add_argument("--resume-at", type=int, help="the n of Last-Event-ID <id>:<n> (default: tokens / 2)")
    ap.add_argument("--resume-concurrency", type=int, default=10, help="resumes at a time")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a round's streams (or resumes) may take")
    ap.add_argument("--quiet-cpu", type=float, default=20.0, help="before a round, wait for other processes under this %%")
    ap.add_argument("--quiet-wait", type=float, default=20.0, help="... but at most this many seconds a round")
    ap.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="seconds idle before each round, before the quiet check: 5 or more makes every start cold (a worker"
        " remembers a token and a user's site-wide ban check for 5 s), as for people who read a reply before asking again",
    )
    ap.add_argument("--results-dir", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (database, logs); kept anyway on failure")
    a = ap.parse_args()
    if a.upstream_port:
        uvloop.run(upstream_serve(a.upstream_port))
        return 0
    a.apis = [x.strip() for x in a.apis.split(",") if x.strip()]
    if not a.apis or set(a.apis) - set(APIS):
        ap.error(f"--apis: a comma list of {', '.join(APIS)}")
    a.targets = [x.strip() for x in a.targets.split(",") if x.strip()]
    if not a.targets or set(a.targets) - {"ours", "bare"}:
        ap.error("--targets: a comma list of ours, bare")
    try:
        a.streams = [int(x) for x in a.streams.split(",") if x.strip()]
    except ValueError:
        ap.error("--streams: a comma list of integers")
    if not a.streams or min(a.streams) < 1 or a.workers < 1 or a.repeat < 1 or a.resume_concurrency < 1:
        ap.error("need streams >= 1, workers >= 1, repeat >= 1, resume-concurrency >= 1")
    if not 2 <= a.tokens <= 100_000 or a.resumes < 0 or not 0 <= (a.resume_at or 0) < a.tokens or a.timeout <= 0:
        ap.error("need 2 <= tokens <= 100000, resumes >= 0, 0 <= resume-at < tokens, timeout > 0")
    if shutil.which("redis-server") is None:
        ap.error("redis-server is not installed (make bench-sse installs it with apt)")

    status, doc, out = session(a, "sse", lambda tmp, procs: run(a, tmp, procs))
    if out is None:
        return status
    results, stamp = doc["targets"], doc["timestamp"]
    after = a.tokens // 2 if a.resume_at is None else a.resume_at
    print(
        f"\n### SSE {stamp}: {'/'.join(map(str, a.streams))} concurrent streams x {a.tokens} tokens, echo backend with"
        f" no delay, {a.workers} workers, streams round-robin over them; resume: Last-Event-ID <id>:{after} on the"
        f" other worker, {a.resumes} a round, {a.resume_concurrency} at a time; median of {a.repeat}"
        + (f"; {a.gap:g} s idle before each round" if a.gap else "")
        + "\n"
    )
    print(table(a, results))
    print(f"\nJSON: {shown(out)}  (wall {doc['wall_s']:.0f} s)")
    errors = sum(x["errors"] + (x.get("resume") or {}).get("errors", 0) for r in results for x in r["rounds"])
    if errors:
        print(f"bench: FAIL: {errors} streams or resumes incomplete or wrong (see the errors column)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
