"""Secret leaks through logs: no API key secret and no database password reaches a
log line, whatever the daemon logs (access log, sampled SIP log, debug, errors)."""

from __future__ import annotations

import base64
import logging
import subprocess
from pathlib import Path

import pytest
from sip_peer import parse_reply

from cnamd.logs import JsonFormatter, KeyValueFormatter, redact
from ops_daemon import CLI, Daemon, DatabaseProxy, http_get, invite, sip_exchange

DB_PASSWORD = "Db-Pass-7f3a9c"


def test_redact_hides_url_and_keyword_passwords() -> None:
    assert redact("postgresql://bob:s3cret@db:5432/cnamd") == "postgresql://bob:***@db:5432/cnamd"
    assert redact("postgres://u:p@ss@h/d x") == "postgres://u:***@h/d x"
    assert redact("host=db password=s3cret dbname=x") == "host=db password=*** dbname=x"
    assert (
        redact("postgresql://postgres:@/cnamd?host=/run")
        == "postgresql://postgres:@/cnamd?host=/run"
    )
    assert redact("mail bob@example.org") == "mail bob@example.org"


@pytest.mark.parametrize("formatter", [KeyValueFormatter(), JsonFormatter()])
def test_both_log_formats_redact_messages_fields_and_tracebacks(
    formatter: logging.Formatter,
) -> None:
    url = "postgresql://bob:s3cret@db/cnamd"
    try:
        raise ValueError(f"cannot connect to {url}")
    except ValueError as exc:
        record = logging.LogRecord(
            "t", logging.ERROR, "f", 1, "lost %s", (url,), (type(exc), exc, None)
        )
    record.url = url
    line = formatter.format(record)
    assert "s3cret" not in line and line.count("bob:***@") == 3


def test_access_log_redacts_credential_parameters() -> None:
    from aiohttp.test_utils import make_mocked_request

    from cnamd.http.access_log import redacted_path

    req = make_mocked_request("GET", "/v3/phone/+1555?account_sid=AC1&auth_token=tok.SECRET&x=1")
    assert redacted_path(req) == "/v3/phone/+1555?account_sid=AC1&auth_token=REDACTED&x=1"


def test_sip_request_log_samples_every_nth_message() -> None:
    from cnamd.sip.requestlog import SampledRequestLog

    tracer = SampledRequestLog(0.25)
    logged: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = logged.append  # type: ignore[method-assign]
    logger = logging.getLogger("cnamd.sip.requests")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        data = invite(5060, "+492216698712", branch="z9hG4bK-s")
        for _ in range(8):
            tracer(data, ("127.0.0.1", 5999), "udp", (b"SIP/2.0 302 Moved", ("127.0.0.1", 5999)))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert len(logged) == 2
    assert logged[0].__dict__["status"] == "302" and logged[0].__dict__["method"] == "INVITE"


@pytest.mark.timeout(120)
def test_no_secret_in_any_log_line_of_a_daemon_run(tmp_path: Path, db_url: str) -> None:
    proxy = DatabaseProxy(db_url)
    url = proxy.url(password=DB_PASSWORD)
    try:
        created = subprocess.run(
            [*CLI, "apikey", "create", "--role", "operator", "--database-url", url],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        token = created.stdout.strip().splitlines()[-1]
        key_id, _, secret = token.partition(".")
        assert key_id and len(secret) > 20
        config = (
            '[log]\nlevel = "debug"\n[http]\naccess_log = true\ntrusted_networks = []\n'
            "[sip]\nlog_sample = 1.0\n"
        )
        daemon = Daemon(tmp_path, database_url=url, config=config, workers=2)
        try:
            daemon.wait_ready()
            lookup = daemon.base + "/v1/lookup/+492216698712?tenant=demo"
            basic = base64.b64encode(f"{key_id}:{secret}".encode()).decode()
            for headers in (
                {"Authorization": f"Bearer {token}"},
                {"X-Auth-Token": token},
                {"Authorization": f"Basic {basic}"},
            ):
                assert http_get(lookup, headers)[0] == 200
            # OpenCNAM asks the global directory, with the key in the query
            query = f"account_sid={key_id}&auth_token={secret}"
            opencnam = f"{daemon.base}/v3/phone/+12125550001?{query}"
            assert http_get(opencnam)[0] == 200
            wrong = {"Authorization": f"Bearer {key_id}.{secret[::-1]}"}
            assert http_get(lookup, wrong)[0] == 401
            assert http_get(f"{lookup}&auth_token={secret}")[0] in (200, 401)
            dip = invite(daemon.sip_port, "+492216698712", branch="z9hG4bK-leak")
            assert parse_reply(sip_exchange(daemon.sip_port, dip)).status == 302
            daemon.wait_lines("http request", count=6)
            daemon.wait_lines("sip request")
            # the database goes away and comes back: reconnect errors are logged too
            proxy.cut()
            daemon.wait_lines("lost the database")
            proxy.restore()
            daemon.config.write_text(config + "[database]\npool_max = 5\n")
            daemon.sighup()
            daemon.wait_lines("settings changed that need a restart")
        finally:
            out = daemon.stop()
    finally:
        proxy.close()
    assert "auth_token=REDACTED" in out
    for leak in (secret, DB_PASSWORD):
        hits = [line for line in out.splitlines() if leak in line]
        assert hits == [], hits
