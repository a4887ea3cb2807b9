"""Schemathesis against the live stack (Ray Serve's proxy, the ingress, the database, the object store, the
engines), with the admin's and a tenant's key: no 5xx, every answer as the OpenAI document says.

Left out here, fuzzed in-process instead (tests/unit/service/api/test_fuzz.py, the same routes and code):
the three operations that generate with the engine (a random `max_tokens` costs minutes on CPU) and the
admin's changes to tenants (they would change the limits or state of the tenants of other tests)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import negative_data_rejection, positive_data_acceptance

from service.api.app import create_app
from service.platform.settings import Settings
from tests.integration.helpers import RunningStack

# The document the stack serves, made by the same code (schemathesis needs it when tests are collected).
with tempfile.TemporaryDirectory() as _tmp:
    SPEC = create_app(
        Settings(data_dir=Path(_tmp), api_key="x", s3_endpoint_url="http://127.0.0.1:1")
    ).openapi()
schema = (
    schemathesis.openapi.from_dict(SPEC)
    .exclude(path=["/v1/chat/completions", "/v1/completions", "/v1/embeddings"])
    .exclude(path_regex="^/v1/admin/tenants/")
    .exclude(path="/v1/admin/api_keys/{key_id}", method="DELETE")
)
FUZZ = settings(
    max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
KEYS: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def keys(stack: RunningStack) -> None:
    KEYS.update(url=stack.base_url, admin=stack.admin_key, tenant=stack.tenant_key("fuzz-live"))


def check(case, who: str) -> None:
    # As in-process: cross-field rules and pydantic's lax numbers are beyond the JSON schema.
    case.call_and_validate(
        base_url=KEYS["url"],
        headers={"Authorization": f"Bearer {KEYS[who]}"},
        excluded_checks=[positive_data_acceptance, negative_data_rejection],
        timeout=60,
    )


@schema.parametrize()
@FUZZ
def test_the_live_stack_answers_every_operation_as_documented_for_the_admin(case) -> None:
    check(case, "admin")


@schema.parametrize()
@FUZZ
def test_the_live_stack_answers_every_operation_as_documented_for_a_tenant(case) -> None:
    check(case, "tenant")
