"""The proxy fixtures as users meet them (pytester, in subprocesses): ``toxiproxy`` and ``proxies``, cleanup
after passing and failing tests, nothing started for tests that do not ask, xdist, and a shared external
server."""
from __future__ import annotations

import pytest

from harness.proxy import ProxyServer
from harness.toxiproxy import ToxiproxyClient

pytest_plugins = ["pytester"]

ECHO = '''
import socket, socketserver, threading
import pytest

class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while data := self.request.recv(65536):
            self.request.sendall(data)

@pytest.fixture(scope="session")
def echo_address():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield "%s:%d" % server.server_address
    server.shutdown()
    server.server_close()

def round_trip(host, port, payload=b"ping"):
    import time
    with socket.create_connection((host, port), timeout=5) as sock:
        t0 = time.perf_counter()
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            got += sock.recv(100)
        return time.perf_counter() - t0
'''


def test_proxies_fixture_makes_and_deletes_proxies(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ECHO)
    pytester.makepyfile(
        """
        from conftest import round_trip

        def test_create(proxies, toxiproxy, echo_address):
            db = proxies.create("db", upstream=echo_address)
            assert db.name == "db" and db.listen == f"{db.listen_host}:{db.listen_port}"
            assert db.listen_host.startswith("127.") and db.listen_host != "127.0.0.1"
            assert round_trip(db.listen_host, db.listen_port) < 0.5
            assert toxiproxy.get_proxy("db")["upstream"] == echo_address
            assert proxies["db"] is db

        def test_fails_with_a_proxy(proxies, echo_address):
            proxies.create("doomed", upstream=echo_address, listen="127.0.0.1:0")
            assert False, "boom"

        def test_nothing_left(toxiproxy):
            assert toxiproxy.proxies() == {}
        """
    )
    res = pytester.runpytest_subprocess("-p", "no:randomly")
    res.assert_outcomes(passed=2, failed=1)


def test_a_failing_test_inside_a_fault_leaves_no_toxic_behind(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ECHO + '''
@pytest.fixture(scope="session")
def shared(toxiproxy, echo_address):
    info = toxiproxy.create_proxy("shared", listen="127.0.0.1:0", upstream=echo_address)
    host, port = info["listen"].rsplit(":", 1)
    return host, int(port)
''')
    pytester.makepyfile(
        """
        from conftest import round_trip
        from faults import network

        def test_fails_inside_a_fault(shared, toxiproxy):
            with network.latency("shared", 300):
                assert round_trip(*shared) >= 0.3
                assert False, "boom inside the fault"

        def test_fails_after_starting_a_fault_it_never_stops(shared, toxiproxy):
            network.partition("shared").start()
            network.latency("shared", 300).start()
            assert False, "boom"

        def test_toxics_added_by_hand_are_reset_too(shared, toxiproxy):
            toxiproxy.add_toxic("shared", "latency", {"latency": 300})
            toxiproxy.update_proxy("shared", enabled=False)

        def test_next_test_starts_clean(shared, toxiproxy):
            proxy = toxiproxy.get_proxy("shared")
            assert proxy["toxics"] == [] and proxy["enabled"] is True
            assert round_trip(*shared) < 0.3
        """
    )
    res = pytester.runpytest_subprocess("-p", "no:randomly")
    res.assert_outcomes(passed=2, failed=2)


def test_tests_that_do_not_use_the_proxy_start_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import sys
        from harness.plugin import _STACK_KEY

        def pytest_sessionfinish(session):
            stack = session.config.stash.get(_STACK_KEY, None)
            started = stack is not None and stack.started("proxy server")
            print("PROXY-STARTED", started, "CLIENT-LOADED", "harness.toxiproxy" in sys.modules)
        """
    )
    pytester.makepyfile("def test_plain():\n    assert True\n\ndef test_fails():\n    assert False\n")
    res = pytester.runpytest_subprocess("-s")
    res.assert_outcomes(passed=1, failed=1)
    res.stdout.fnmatch_lines(["*PROXY-STARTED False CLIENT-LOADED False*"])


def test_under_xdist(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(ECHO)
    pytester.makepyfile(
        """
        import pytest
        from conftest import round_trip
        from faults import network

        @pytest.mark.parametrize("i", range(6))
        def test_each_worker_has_its_proxies(proxies, toxiproxy, echo_address, i):
            p = proxies.create("db", upstream=echo_address)
            with network.latency("db", 50):
                assert round_trip(p.listen_host, p.listen_port) >= 0.05
            assert round_trip(p.listen_host, p.listen_port) < 0.05 + 0.5
            assert set(toxiproxy.proxies()) == {"db"}
        """
    )
    res = pytester.runpytest_subprocess("-p", "xdist", "-n", "2")
    res.assert_outcomes(passed=6)


def test_external_server_shared_by_xdist_workers(pytester: pytest.Pytester) -> None:
    with ProxyServer() as server:
        pytester.makeconftest(ECHO)
        pytester.makepyfile(
            """
            import os, pytest, requests
            from conftest import round_trip
            from faults import network

            @pytest.mark.parametrize("i", range(4))
            def test_same_name_in_every_worker(proxies, toxiproxy, echo_address, dbdrill_settings, i):
                worker = os.environ["PYTEST_XDIST_WORKER"]
                assert toxiproxy.url == dbdrill_settings.toxiproxy_url
                p = proxies.create("db", upstream=echo_address)
                on_server = requests.get(toxiproxy.url + "/proxies", timeout=5).json()
                assert f"{worker}-db" in on_server and "db" not in on_server
                with network.latency("db", 30):
                    assert round_trip(p.listen_host, p.listen_port) >= 0.03
                toxiproxy.add_toxic("db", "latency", {"latency": 1}, name="left-for-reset")
            """
        )
        res = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", f"--dbdrill-toxiproxy-url={server.url}")
        res.assert_outcomes(passed=4)
        assert ToxiproxyClient(server.url).proxies() == {}
