"""Device routes: enrollment, enrollment tokens, the device list, revocation, the audit log."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from fedrt.coordinator.api.bodies import EnrollRequest, TokenRequest
from fedrt.coordinator.api.common import (
    AUDIT_PAGE_MAX,
    IP_LIMITER,
    admin,
    ctx_of,
    int_param,
    json_body,
    json_reply,
)
from fedrt.coordinator.api.enroll_batch import ENROLL_BATCHER
from fedrt.coordinator.api.views import audit_view, b64, device_view
from fedrt.coordinator.devices.enrollment import EnrollmentRequest


async def enroll(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    request.app[IP_LIMITER].acquire("enroll:" + (request.remote or "?"))
    body = await json_body(request, EnrollRequest)
    # The schema's patterns admit only padded base64 of the right length.
    public_key, proof = base64.b64decode(body.public_key), base64.b64decode(body.proof)
    enroll_request = EnrollmentRequest(body.token, public_key, proof, body.labels)
    # With the enrollments arriving meanwhile: one broker sync for them all.
    grant = await request.app[ENROLL_BATCHER].submit(enroll_request)
    host, port, tls = ctx.mqtt_endpoint()
    reply: dict[str, Any] = {
        "device_id": grant.device_id,
        "mqtt_username": grant.mqtt_username,
        "mqtt_password": grant.mqtt_password,
        "coordinator_public_key": b64(grant.coordinator_public_key),
        "mqtt": {"host": host, "port": port, "tls": tls},
    }
    # A broker cluster: the other nodes' listeners (mqtt_nodes), and the MQTT version.
    if ctx.mqtt_nodes:
        reply["mqtt"]["nodes"] = [{"host": h, "port": p} for h, p in ctx.mqtt_nodes]
    if ctx.mqtt_protocol is not None:
        reply["mqtt"]["protocol"] = ctx.mqtt_protocol
    if ctx.mqtt_inbox_qos is not None:
        reply["mqtt"]["inbox_qos"] = ctx.mqtt_inbox_qos
    # Where to fetch models from, and the CA to verify that server with from now on.
    if grant.coordinator_url is not None:
        reply["coordinator_url"] = grant.coordinator_url
    if grant.ca_pem is not None:
        reply["ca_pem"] = grant.ca_pem
    return json_reply(reply, status=201)


async def create_enrollment_token(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = admin(request)
    body = await json_body(request, TokenRequest)
    token = ctx.enrollment.create_token(actor=actor, ttl_s=body.ttl_s, note=body.note)
    return json_reply({"token": token, "expires_at": ctx.clock() + body.ttl_s}, status=201)


async def list_devices(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    return json_reply({"devices": [device_view(d) for d in ctx.store.list_devices()]})


async def revoke_device(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    actor = admin(request)
    return json_reply(
        device_view(ctx.enrollment.revoke(request.match_info["device_id"], actor=actor))
    )


async def audit(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    admin(request)
    after = int_param(request.query.get("after", "0"), "after", lo=0)
    limit = min(int_param(request.query.get("limit", "100"), "limit", lo=1), AUDIT_PAGE_MAX)
    entries = ctx.store.list_audit(after_seq=after, limit=limit)
    return json_reply({"entries": [audit_view(e) for e in entries]})


__all__ = ["audit", "create_enrollment_token", "enroll", "list_devices", "revoke_device"]
