"""A slow store never stalls the network loop (``state_thread``): with PostgreSQL locked by
another session, the coordinator still answers its health check and keeps its MQTT link,
while a request that needs the store waits for it, and completes once the lock is gone."""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg

from fedrt.coordinator.broker.mosquitto import MosquittoBroker
from fedrt.coordinator.config import Secret, StoreConfig
from tests.coordinator.harness import Reply, ServiceThread, make_config

WAIT_S = 30.0


def test_a_locked_database_holds_store_requests_but_not_the_network(
    tmp_path: Path, postgres_url: str, mosquitto: MosquittoBroker
) -> None:
    config = make_config(
        tmp_path / "data", mosquitto.url, store=StoreConfig(url=Secret(postgres_url))
    )
    with ServiceThread(config) as svc:
        assert svc.request("GET", "/v1/tasks").status == 200
        replies: list[Reply] = []
        with psycopg.connect(postgres_url) as admin:
            admin.execute("LOCK TABLE tasks IN ACCESS EXCLUSIVE MODE")  # until rollback
            waiting = threading.Thread(
                target=lambda: replies.append(svc.request("GET", "/v1/tasks"))
            )
            waiting.start()
            for _ in range(600):  # until the listing waits on the lock (bounded)
                row = admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                ).fetchone()
                if row and row[0]:
                    break
                waiting.join(0.05)
            else:
                raise AssertionError("the task listing never reached the database")
            health = svc.request("GET", "/healthz")
            assert health.status == 200
            assert health.json()["mqtt_connected"] is True
            assert svc.service.link is not None
            assert svc.service.link.connected
            assert replies == []  # the listing is still waiting for the lock
            admin.rollback()
        waiting.join(WAIT_S)
        assert not waiting.is_alive()
        assert [r.status for r in replies] == [200]
