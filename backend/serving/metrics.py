"""``GET /metrics``: the service's Prometheus metrics, in the text format.

Under gunicorn every worker is a process of its own, and a scrape reaches one of them: a
registry per process would show that worker's share only, and lose it when the worker is
replaced. So the service runs ``prometheus_client``'s multiprocess mode: each process
writes its counters, histograms and gauges to memory-mapped files in one directory
(``PROMETHEUS_MULTIPROC_DIR``, made fresh by ``gunicorn.conf.py`` for each start of the
master, before anything imports ``prometheus_client``), and whichever worker answers the
scrape adds them all up. A worker that dies keeps its counts in its files, and its
re-forked successor writes files of its own: nothing is lost and nothing counted twice.
The master's own files hold the start's migrations. Outside gunicorn (``flask`` commands,
tests in process) the variable is unset and the process's own registry answers.

What is written as it happens stays cheap, since it runs on every request and every
checkout: a dictionary lookup for the request's series, then a few writes to memory. What
describes the database (its schema revision, its pending revisions, the background
migrations) is read when Prometheus asks, by the worker that answers: the schema through
``/readyz``'s own reader and verdict (``backend/serving/health.py``), the background
migrations in one short query under a statement timeout, and only once the schema read has
found the database answering. A database down or hung costs a scrape what it costs
``/readyz``; those series are then left out, the failure is counted, and the scrape still
answers 200.

Two settings (``backend/config.py``). ``METRICS=off`` records nothing: no hook, no pool
instrumentation, no multiprocess directory (``gunicorn.conf.py`` makes none), and
``/metrics`` answers 404. ``METRICS_PORT`` moves ``/metrics`` to a second port gunicorn
listens on: which port a request came in on is the port its connection was accepted on
(the socket gunicorn hands the app), never the Host header or ``SERVER_PORT``, which the
client writes. That port answers ``/metrics`` only, and the public one everything but
``/metrics``, both with the application's own 404. Outside gunicorn (``flask run``, the
test client) there is no second listener: ``/metrics`` is served as if the setting were
unset.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from functools import cache, lru_cache
from typing import Any

import psycopg2
from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import (
    CONTENT_TYPE_PLAIN_0_0_4,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import Pool

from backend.extensions import db
from backend.migrate.background import STATES, lock_key
from backend.migrate.background import TABLE as BACKGROUND_TABLE
from backend.migrate.revisions import (
    disk_checksums,
    evaluate,
    load_scripts,
    parse_state,
    versions_stamp,
)
from backend.serving import health

log = logging.getLogger(__name__)

blueprint = Blueprint("metrics", __name__)

# Decided once, as prometheus_client decided it when this module imported it.
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
# ``*_created`` series double the output and mean nothing across re-forked workers.
disable_created_metrics()

# An API's answers: from a few milliseconds (a read by key) to the deadline of a database
# that hangs (DB_QUERY_TIMEOUT + 1 s, 6 s by default).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A checkout from an idle pool takes microseconds; one that opens a connection, or waits
# for another thread to free one, milliseconds and up to the pool's timeout
# (DB_QUERY_TIMEOUT). Only those are observed: the quick ones would cost every request two
# writes to say nothing.
WAITED = 0.001
WAIT_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A revision: milliseconds for a catalog change, minutes for an index built concurrently.
REVISION_BUCKETS = (0.01, 0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
# The migration lock: free in the usual case; another replica's whole migration when many
# start together, up to MIGRATION_LOCK_WAIT (300 s by default).
LOCK_WAIT_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0)

REQUESTS = Counter(
    "backend_http_requests", "Requests answered, by route (the URL rule, or 'unmatched'), "
    "method and status.", ["route", "method", "status"])
REQUEST_SECONDS = Histogram(
    "backend_http_request_duration_seconds", "Seconds from the request's first hook to its "
    "response, by route and method.", ["route", "method"], buckets=LATENCY_BUCKETS)
POOL_CHECKOUTS = Counter(
    "backend_db_pool_checkouts", "Connections checked out of the database pool.")
POOL_WAIT_SECONDS = Histogram(
    "backend_db_pool_checkout_wait_seconds", "Checkouts that waited over 1 ms for a "
    "connection (a new one, or one another thread had to free; failed checkouts too), by "
    "seconds waited.", buckets=WAIT_BUCKETS)
POOL_IN_USE = Gauge(
    "backend_db_pool_connections_in_use", "Pooled connections checked out now, over the "
    "live processes.", multiprocess_mode="livesum")
CIRCUIT_OPEN = Gauge(
    "backend_db_circuit_open", "1 while a worker's outage breaker is open (it answers API "
    "requests 503 at once), else 0; the highest over the live processes.",
    multiprocess_mode="livemax")
CIRCUIT_REJECTIONS = Counter(
    "backend_db_circuit_rejections", "API requests answered 503 by an open breaker "
    "without asking the database.")
REVISION_SECONDS = Histogram(
    "backend_migration_revision_duration_seconds", "Revisions applied (direction 'up') or "
    "rolled back ('down') by this server's processes, with their duration.", ["direction"],
    buckets=REVISION_BUCKETS)
MIGRATION_SECONDS = Histogram(
    "backend_migration_duration_seconds", "Schema-changing commands run by this server's "
    "processes (the start's upgrade), from asking for the migration lock to the end, by "
    "outcome: 'applied' (revisions ran), 'nothing' (nothing was pending) or 'failed'.",
    ["outcome"], buckets=REVISION_BUCKETS)
MIGRATION_LOCK_WAIT_SECONDS = Histogram(
    "backend_migration_lock_wait_seconds", "Seconds this server's processes waited for the "
    "migration lock (one migrator at a time), by outcome: 'acquired', or 'gave_up' once "
    "MIGRATION_LOCK_WAIT passed.", ["outcome"], buckets=LOCK_WAIT_BUCKETS)
MIGRATION_LOCK_TIMEOUTS = Counter(
    "backend_migration_lock_timeouts", "Tries of a revision that could not lock a table "
    "within MIGRATION_LOCK_TIMEOUT (each is retried, up to MIGRATION_RETRIES tries).")
SCRAPE_ERRORS = Counter(
    "backend_metrics_database_errors", "Scrapes that left out a source's series because "
    "the database did not answer for it.", ["source"])

# Every series that can be known in advance exists from the start, at 0: a rate over it is
# defined before the first event.
for _direction in ("up", "down"):
    REVISION_SECONDS.labels(_direction)
for _outcome in ("applied", "nothing", "failed"):
    MIGRATION_SECONDS.labels(_outcome)
for _outcome in ("acquired", "gave_up"):
    MIGRATION_LOCK_WAIT_SECONDS.labels(_outcome)
for _source in ("schema", "background_migrations"):
    SCRAPE_ERRORS.labels(_source)

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
SCRAPE_ENDPOINT = "metrics.scrape"
_STARTED = "backend.metrics.started"
_CHECKED_OUT = "backend.metrics.checked_out"
# (route, method, status) -> (its counter, its histogram): labels() validates and locks on
# every call; the children it returns do not change.
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _start() -> None:
    # Through the proxy once: attribute access on ``request`` looks the context up each time.
    request._get_current_object().environ[_STARTED] = time.perf_counter()


def _record(response: Response) -> Response:
    """Count the request and observe its duration; the last after-request hook to run, so
    the status is the one the client gets."""
    req = request._get_current_object()  # one context lookup instead of four
    started = req.environ.get(_STARTED)
    rule = req.url_rule
    method = req.method if req.method in _METHODS else "other"
    key = (rule.rule if rule is not None else "unmatched", method, response.status_code)
    series = _series.get(key)
    if series is None:
        series = _series[key] = (REQUESTS.labels(*key), REQUEST_SECONDS.labels(*key[:2]))
    series[0].inc()
    if started is not None:
        series[1].observe(time.perf_counter() - started)
    return response


@cache
def _measured(pool_class: type[Pool]) -> type[Pool]:
    """``pool_class`` whose ``connect()`` times the wait for a connection. SQLAlchemy has no
    event before a checkout, only after it; a pool recreated by ``engine.dispose()`` (each
    worker disposes what it inherited) is built from ``self.__class__`` and keeps this."""

    def connect(self):
        started = time.perf_counter()
        try:
            return pool_class.connect(self)
        finally:
            waited = time.perf_counter() - started
            if waited > WAITED:
                POOL_WAIT_SECONDS.observe(waited)

    return type(pool_class.__name__, (pool_class,),
                {"connect": connect, "__module__": pool_class.__module__,
                 "__doc__": pool_class.__doc__, "_metrics_measured": True})


def _checked_out(dbapi_connection, record, proxy) -> None:
    record.record_info[_CHECKED_OUT] = True
    POOL_CHECKOUTS.inc()
    POOL_IN_USE.inc()


def _checked_in(dbapi_connection, record) -> None:
    # Only a checkout counted here is uncounted: SQLAlchemy also checks in a connection
    # whose checkout failed in an earlier listener (one found closed, then not reconnected).
    if record.record_info.pop(_CHECKED_OUT, False):
        POOL_IN_USE.dec()


def instrument_pool(engine: Engine) -> None:
    """Count ``engine``'s checkouts, time their waits and keep the connections in use.
    Call it after ``forbid_inherited_connections``: a checkout that guard refuses is retried
    and counted once, when it succeeds."""
    pool = engine.pool
    if not getattr(pool, "_metrics_measured", False):
        pool.__class__ = _measured(type(pool))
    event.listen(engine, "checkout", _checked_out)
    event.listen(engine, "checkin", _checked_in)


def accepted_port(environ: Mapping[str, Any]) -> int | None:
    """The local port the request's connection was accepted on: None outside gunicorn
    (no socket in the environ), 0 for a socket without one (a Unix socket)."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None
    try:
        address = sock.getsockname()
    except OSError:
        return 0
    return address[1] if isinstance(address, tuple) else 0


def _port_guard(metrics_port: int) -> Callable[[], None]:
    """A before-request hook: on ``metrics_port`` only ``/metrics`` exists, elsewhere
    everything but. A refused request is answered 404 as if no route matched (and counted
    so: route 'unmatched'), before any other hook can look at it."""

    def only_metrics_on_its_port() -> None:
        req = request._get_current_object()
        port = accepted_port(req.environ)
        if port is None:
            return  # outside gunicorn: one listener, served as if METRICS_PORT were unset
        if (port == metrics_port) != (req.endpoint == SCRAPE_ENDPOINT):
            req.url_rule = None
            abort(404)

    return only_metrics_on_its_port


def init_app(app: Flask) -> None:
    """Count and time every request of ``app`` and instrument its database pool; with
    ``METRICS_PORT``, keep ``/metrics`` and the application on their own ports. Call it
    before any other extension adds a before-request hook: one that answers early (a 503
    from the outage breaker, a 408 for a stalled body) skips the hooks after it.
    ``METRICS=off``: nothing at all."""
    settings = app.config["SERVICE_CONFIG"]
    if not settings.metrics:
        return
    app.before_request(_start)
    if settings.metrics_port is not None:
        app.before_request(_port_guard(settings.metrics_port))
    app.after_request(_record)
    with app.app_context():
        instrument_pool(db.engine)


# --- read when Prometheus asks ------------------------------------------------------------


@lru_cache(maxsize=64)
def _schema_families(directory: str, stamp: int, state: health.State, allow_edited: bool,
                     allow_ahead: bool) -> tuple[Metric, ...]:
    """The schema's series for a database state, computed once per state (as /readyz's
    answer is) by the same verdict."""
    current, recorded = parse_state(state)
    status = evaluate(load_scripts(directory, stamp), current, recorded,
                      disk_checksums(directory, stamp), allow_edited, allow_ahead)
    revision = GaugeMetricFamily("backend_schema_revision", "The database's schema "
                                 "revision(s), as alembic_version records them; always 1.",
                                 labels=["revision"])
    for rev in status.current:
        revision.add_metric([rev], 1)
    pending = GaugeMetricFamily("backend_schema_pending_revisions", "Pre-deploy revisions "
                                "this code has and the database lacks (/readyz is 503 "
                                "while any is).", value=len(status.pending))
    post = GaugeMetricFamily("backend_schema_post_deploy_pending_revisions", "Post-deploy "
                             "revisions waiting for `flask migrations post-deploy`.",
                             value=len(status.post_deploy_pending))
    return revision, pending, post


# One query: each registered migration, its rows done, an estimate of its rows in all (the
# rows done, or the table's row count from the planner's statistics, whichever is larger;
# none before the table was ever analysed), and the advisory locks held, only when a
# migration says it is running: one recorded running or paused that no runner holds is
# reported pending, as `flask migrations backfill status` reports it.
_BACKGROUND_SQL = f"""
SELECT m.name, m.state, m.rows_done,
       CASE WHEN m.state = 'done' THEN m.rows_done
            WHEN c.reltuples >= 0 THEN greatest(m.rows_done, c.reltuples::bigint) END,
       CASE WHEN m.state IN ('running', 'paused') THEN
            ARRAY(SELECT (l.classid::bigint << 32) | l.objid::bigint FROM pg_locks l
                  WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1) END
FROM {BACKGROUND_TABLE} m LEFT JOIN pg_class c ON c.oid = to_regclass(m.table_name)
ORDER BY m.name
"""
# Whether this process has seen the table: until it has, one to_regclass() first, so that a
# database without background migrations never logs an error per scrape.
_background_table: list[bool] = [False]


def _background_rows(timeout: float) -> list[tuple]:
    with db.engine.connect() as connection:
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout * 1000)}")
        if not _background_table[0]:
            if not connection.exec_driver_sql(
                    f"SELECT to_regclass('{BACKGROUND_TABLE}') IS NOT NULL").scalar():
                return []
            _background_table[0] = True
        try:
            return list(connection.exec_driver_sql(_BACKGROUND_SQL).all())
        except sa_exc.ProgrammingError as exc:
            if not isinstance(exc.orig, psycopg2.errors.UndefinedTable):
                raise
            _background_table[0] = False  # rolled back past the revision that made it
            return []


def _background_families(timeout: float) -> list[Metric]:
    done = GaugeMetricFamily("backend_background_migration_rows_done", "Rows a background "
                             "migration has changed so far.", labels=["name"])
    total = GaugeMetricFamily("backend_background_migration_rows_total", "Estimated rows a "
                              "background migration changes in all (exact once done).",
                              labels=["name"])
    state = GaugeMetricFamily("backend_background_migration_state", "1 for a background "
                              "migration's state, 0 for the others.", labels=["name", "state"])
    rows = _background_rows(timeout)
    for name, recorded, rows_done, rows_total, held in rows:
        if held is not None and lock_key(name) not in held:
            recorded = "pending"  # its runner is gone: the next run resumes it
        done.add_metric([name], rows_done)
        if rows_total is not None:
            total.add_metric([name], rows_total)
        for each in STATES:
            state.add_metric([name, each], 1 if each == recorded else 0)
    return [done, total, state] if rows else []


def _database_families() -> list[Metric]:
    """The schema's and the background migrations' series; each source the database did not
    answer for is left out and counted."""
    settings = current_app.config["SERVICE_CONFIG"]
    directory = current_app.extensions["migrate"].directory
    try:
        # /readyz's reader: probes and scrapes that arrive together share one statement. A
        # scrape queues behind a read in flight for a second at most (a probe waits up to
        # DB_QUERY_TIMEOUT): on a hung database the scrape costs about what one probe does.
        state = health._reader.read(db.engine.url, min(1.0, settings.db_query_timeout))
    except psycopg2.Error as exc:
        log.debug("metrics: schema not read: %s", exc)
        # A database that did not answer that read is not asked again in the same scrape.
        SCRAPE_ERRORS.labels("schema").inc()
        SCRAPE_ERRORS.labels("background_migrations").inc()
        return []
    families = list(_schema_families(directory, versions_stamp(directory), state,
                                     settings.allow_edited, settings.allow_ahead))
    try:
        families += _background_families(min(1.0, settings.db_query_timeout))
    except (sa_exc.SQLAlchemyError, psycopg2.Error) as exc:
        log.debug("metrics: background migrations not read: %s", exc)
        SCRAPE_ERRORS.labels("background_migrations").inc()
    return families


class _Collected:
    """Families already read, in the shape ``generate_latest`` takes."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return self.families


def _written() -> CollectorRegistry:
    """What the processes wrote: every process's files in multiprocess mode, else this
    process's own registry."""
    if not MULTIPROCESS:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


@blueprint.get("/metrics")
def scrape() -> Response:
    if not current_app.config["SERVICE_CONFIG"].metrics:
        abort(404)
    families = _database_families()  # first: a failure to read it counts in this scrape
    payload = generate_latest(_written()) + generate_latest(_Collected(families))
    return Response(payload, mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)
