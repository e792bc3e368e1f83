"""Link previews against a real HTTP server on 127.0.0.1.

Every address other than 127.0.0.1 that appears here is refused by the fetcher
before any connection is made; no test sends traffic off the loopback interface.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import DefaultLoopResolver, OverrideResolver
from tornado.testing import AsyncTestCase, bind_unused_port, gen_test

from squall.message import LinkPreview
from squall.pipeline.preview import AllowList, PreviewFetcher, parse_preview

PAGE = """<!doctype html><html><head>
<meta charset="utf-8"><title> Plain   title </title>
<meta property="og:title" content="OG &amp; title">
<meta property="og:description" content="A description.">
<meta property="og:image" content="/img/cat.png">
<meta property="og:site_name" content="Example">
</head><body><meta property="og:title" content="too late"></body></html>"""


class Shared:
    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.active = 0
        self.max_active = 0
        self.two_waiting: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.release = asyncio.Event()


class Handler(web.RequestHandler):
    def initialize(self, shared: Shared) -> None:
        self.shared = shared

    async def get(self, name: str) -> None:
        s = self.shared
        s.hits[name] = s.hits.get(name, 0) + 1
        if name == "page":
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.write(PAGE)
        elif name == "latin1":
            self.set_header("Content-Type", "text/html; charset=ISO-8859-1")
            self.write("<title>Caf\xe9</title>".encode("latin-1"))
        elif name == "xhtml":
            self.set_header("Content-Type", "application/xhtml+xml")
            self.write(b'<html><head><meta name="description" content="only desc"/></head></html>')
        elif name == "json":
            self.set_header("Content-Type", "application/json")
            self.write(b'{"title": "no"}')
        elif name == "big":
            self.set_header("Content-Type", "text/html")
            self.write(b"<title>big</title>" + b"x" * (200 * 1024))
        elif name == "notfound":
            self.set_status(404)
            self.write("<title>Not found</title>")
        elif name.startswith("hop"):
            n = int(name[3:])
            self.redirect(f"/hop{n - 1}" if n > 0 else "/page")
        elif name == "to-private":
            self.redirect("http://10.0.0.1/secret")
        elif name == "to-metadata":
            self.redirect("http://169.254.169.254/latest/meta-data/")
        elif name == "to-metadata-name":
            self.redirect("http://metadata.internal/latest/")
        elif name.startswith("wait"):
            s.active += 1
            s.max_active = max(s.max_active, s.active)
            if s.active == 2 and not s.two_waiting.done():
                s.two_waiting.set_result(None)
            await s.release.wait()
            s.active -= 1
            self.write(f"<title>{name}</title>")
        else:
            raise web.HTTPError(404)


class PreviewTest(AsyncTestCase):
    def setUp(self) -> None:
        super().setUp()
        sock, self.port = bind_unused_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.server: HTTPServer | None = None
        self.sock = sock
        self.fetchers: list[PreviewFetcher] = []
        self.held: list[socket.socket] = []

    def tearDown(self) -> None:
        for f in self.fetchers:
            f.close()
        if self.server is not None:
            self.server.stop()
            self.io_loop.run_sync(self.server.close_all_connections)
        else:
            self.sock.close()
        for s in self.held:
            s.close()
        super().tearDown()

    def start(self) -> Shared:
        shared = Shared()
        app = web.Application(
            [(r"/(.*)", Handler, {"shared": shared})], log_function=lambda handler: None
        )
        self.server = HTTPServer(app)
        self.server.add_sockets([self.sock])
        return shared

    def fetcher(self, **kwargs: Any) -> PreviewFetcher:
        kwargs.setdefault("allow", AllowList.parse(["127.0.0.1"]))
        f = PreviewFetcher(**kwargs)
        self.fetchers.append(f)
        return f

    @gen_test
    async def test_title_and_open_graph(self) -> None:
        self.start()
        preview = await self.fetcher().fetch(f"{self.base}/page")
        assert preview == LinkPreview(
            url=f"{self.base}/page",
            title="OG & title",
            description="A description.",
            image=f"{self.base}/img/cat.png",
            site_name="Example",
        )

    @gen_test
    async def test_charset_and_fallbacks(self) -> None:
        self.start()
        f = self.fetcher()
        latin = await f.fetch(f"{self.base}/latin1")
        assert latin is not None and latin.title == "Café"
        xhtml = await f.fetch(f"{self.base}/xhtml")
        assert xhtml is not None and (xhtml.title, xhtml.description) == (None, "only desc")

    @gen_test
    async def test_redirects_are_followed_up_to_the_limit(self) -> None:
        shared = self.start()
        f = self.fetcher(max_redirects=3)
        preview = await f.fetch(f"{self.base}/hop2")
        assert preview is not None and preview.url == f"{self.base}/hop2"
        assert preview.title == "OG & title"
        assert await f.fetch(f"{self.base}/hop3") is None  # a fourth redirect
        assert shared.hits["hop0"] == 2
        assert shared.hits["page"] == 1  # hop3's chain stopped before the page

    @gen_test
    async def test_redirect_to_refused_addresses(self) -> None:
        shared = self.start()
        asked: list[str] = []

        class Recording(OverrideResolver):
            async def resolve(self, host: str, port: int, family: Any = socket.AF_UNSPEC) -> Any:
                asked.append(host)
                return await super().resolve(host, port, family)

        # "metadata.internal" resolves to the cloud metadata address; the
        # fetcher must refuse it after resolving and before connecting.
        resolver = Recording(
            resolver=DefaultLoopResolver(),
            mapping={("metadata.internal", 80): ("169.254.169.254", 80)},
        )
        f = self.fetcher(resolver=resolver)
        for path in ("to-private", "to-metadata", "to-metadata-name"):
            assert await f.fetch(f"{self.base}/{path}") is None
            assert shared.hits[path] == 1
        # Literal addresses never reach the resolver; the name did, and stopped there.
        assert asked == ["127.0.0.1", "127.0.0.1", "127.0.0.1", "metadata.internal"]

    @gen_test
    async def test_loopback_is_refused_without_allow_list(self) -> None:
        shared = self.start()
        f = self.fetcher(allow=AllowList())
        assert await f.fetch(f"{self.base}/page") is None
        assert await f.fetch(f"http://localhost:{self.port}/page") is None
        assert await f.fetch(f"http://[::ffff:127.0.0.1]:{self.port}/page") is None
        assert shared.hits == {}

    @gen_test
    async def test_allow_list_by_host_and_port(self) -> None:
        shared = self.start()
        f = self.fetcher(allow=AllowList.parse([f"localhost:{self.port}", "10.0.0.0/8"]))
        preview = await f.fetch(f"http://localhost:{self.port}/page")
        assert preview is not None and shared.hits == {"page": 1}
        assert await f.fetch(f"http://127.0.0.1:{self.port}/page") is None

    @gen_test
    async def test_other_schemes_are_refused(self) -> None:
        f = self.fetcher()
        for url in ("ftp://127.0.0.1/", "file:///etc/passwd", "javascript:alert(1)", "http:///x"):
            assert await f.fetch(url) is None

    @gen_test
    async def test_timeout(self) -> None:
        # A listening socket nobody accepts from: the connection completes in the
        # kernel's backlog and the request is never answered.
        silent, port = bind_unused_port()
        self.held.append(silent)
        f = self.fetcher(timeout=0.3)
        assert await f.fetch(f"http://127.0.0.1:{port}/") is None

    @gen_test
    async def test_oversized_body(self) -> None:
        self.start()
        f = self.fetcher(max_bytes=64 * 1024)
        assert await f.fetch(f"{self.base}/big") is None
        assert await f.fetch(f"{self.base}/page") is not None  # the fetcher still works

    @gen_test
    async def test_not_html_and_errors(self) -> None:
        self.start()
        f = self.fetcher()
        assert await f.fetch(f"{self.base}/json") is None
        assert await f.fetch(f"{self.base}/notfound") is None
        sock, closed_port = bind_unused_port()
        sock.close()
        assert await f.fetch(f"http://127.0.0.1:{closed_port}/") is None

    @gen_test
    async def test_concurrency_bound(self) -> None:
        shared = self.start()
        f = self.fetcher(max_concurrent=2)
        tasks = [asyncio.ensure_future(f.fetch(f"{self.base}/wait{i}")) for i in range(5)]
        await asyncio.wait_for(shared.two_waiting, timeout=5)
        assert f.active == 2
        assert shared.active == 2
        shared.release.set()
        results = await asyncio.gather(*tasks)
        assert [r.title if r else None for r in results] == [f"wait{i}" for i in range(5)]
        assert shared.max_active == 2
        assert f.active == 0

    @gen_test
    async def test_cache(self) -> None:
        shared = self.start()
        now = [1000.0]
        f = self.fetcher(clock=lambda: now[0], cache_ttl=60.0, failure_ttl=10.0)
        first = await f.fetch(f"{self.base}/page")
        assert await f.fetch(f"{self.base}/page") == first
        assert shared.hits["page"] == 1
        assert await f.fetch(f"{self.base}/json") is None
        assert await f.fetch(f"{self.base}/json") is None
        assert shared.hits["json"] == 1
        now[0] += 30
        await f.fetch(f"{self.base}/json")
        await f.fetch(f"{self.base}/page")
        assert (shared.hits["json"], shared.hits["page"]) == (2, 1)
        now[0] += 61
        await f.fetch(f"{self.base}/page")
        assert shared.hits["page"] == 2

    @gen_test
    async def test_cache_is_bounded(self) -> None:
        shared = self.start()
        f = self.fetcher(cache_size=1)
        await f.fetch(f"{self.base}/page")
        await f.fetch(f"{self.base}/latin1")
        await f.fetch(f"{self.base}/page")
        assert shared.hits["page"] == 2


def test_parse_preview_without_fields() -> None:
    assert parse_preview("http://x.example/", b"<html><body>hi</body></html>") is None
    p = parse_preview("http://x.example/", b"<title>" + b"a " * 400 + b"</title>")
    assert p is not None and p.title is not None and len(p.title) == 300


def test_parse_preview_refuses_odd_image_schemes() -> None:
    body = (
        b'<meta property="og:title" content="t">'
        b'<meta property="og:image" content="javascript:x">'
    )
    p = parse_preview("http://x.example/", body)
    assert p is not None and p.image is None


def test_allow_list_parse() -> None:
    allow = AllowList.parse(
        ["10.0.0.0/8", "::1", "wiki.internal", "127.0.0.1:8080", "Host.Example."]
    )
    assert len(allow.networks) == 2
    assert allow.hosts == {("wiki.internal", None), ("127.0.0.1", 8080), ("host.example", None)}
    assert allow.allows_host("WIKI.internal", 443)
    assert not allow.allows_host("127.0.0.1", 80)
