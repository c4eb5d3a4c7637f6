"""Schemathesis against the service's own OpenAPI schema: generated requests, valid and invalid, to every
operation (the write ones with the token), on a real gallery. No answer may be a 500, every status and body must
be the documented ones, and the write endpoints must refuse requests without the token."""

from __future__ import annotations

import shutil

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from .helpers import AUTH, TOKEN

pytestmark = pytest.mark.data

#: Examples per operation: enough to reach every parameter's edge cases, bounded so that the run stays short.
MAX_EXAMPLES = 40


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory, rap3df_gallery):
    from nirvis.service.app import create_app

    folder = tmp_path_factory.mktemp("schema") / "gallery"
    shutil.copytree(rap3df_gallery, folder)  # enrolments and removals land in a copy
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(folder, token=TOKEN, max_upload_bytes=256 * 1024))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_follows_its_schema(case):
    # Every check but "valid data is accepted": the schema cannot say that random bytes are not a face image
    # (such uploads get 415 or 422, as documented).
    case.call_and_validate(headers=AUTH, excluded_checks=[positive_data_acceptance])
