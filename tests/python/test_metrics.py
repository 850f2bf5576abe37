"""vaultd's metrics listener read by a real Prometheus text parser (the Prometheus project's
Python client, OpenMetrics): the families are there, counters move as calls are made, labels
carry only fixed names and configured templates, and the probes answer.

Loaded by test_client.py; VAULT_METRICS_ADDR is where run.sh told vaultd to listen.
"""

import http.client
import os
import unittest

from prometheus_client.openmetrics.parser import text_string_to_metric_families

import test_connect

METRICS = os.environ.get("VAULT_METRICS_ADDR", "")


def get(path):
    host, port = METRICS.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read().decode()
    conn.close()
    return resp.status, resp.getheader("Content-Type"), body


def scrape():
    status, ctype, body = get("/metrics")
    assert status == 200, body
    assert ctype.startswith("application/openmetrics-text"), ctype
    return {f.name: f for f in text_string_to_metric_families(body)}, body


def calls(families, **labels):
    return sum(
        s.value for s in families["vault_calls"].samples
        if s.name == "vault_calls_total"
        and all(s.labels.get(k) == v for k, v in labels.items())
    )


@unittest.skipUnless(METRICS, "VAULT_METRICS_ADDR not set")
class Metrics(unittest.TestCase):

    def test_probes(self):
        self.assertEqual(get("/livez")[0], 200)
        self.assertEqual(get("/readyz")[0], 200)
        self.assertEqual(get("/nope")[0], 404)

    def test_families_and_counters_move(self):
        before, _ = scrape()
        for name in [
            "vault_calls", "vault_call_duration_seconds", "vault_work_duration_seconds",
            "vault_calls_shed", "vault_audit_append_duration_seconds",
            "vault_audit_fsync_duration_seconds", "vault_audit_group_commit_events",
            "vault_calls_in_flight", "vault_sealed", "vault_storage_healthy", "vault_ready",
            "vault_key_versions", "vault_key_version_records",
        ]:
            self.assertIn(name, before, sorted(before))
        ok = dict(rpc="tokenize", template="pan_vault", protocol="connect", code="OK")
        denied = dict(rpc="tokenize", template="pan_vault", protocol="connect",
                      code="UNAUTHENTICATED")
        for _ in range(3):
            status, _, body = test_connect.connect(
                "/vault.v1.Tokenizer/Tokenize", test_connect.tokenize_body(["4111111111111111"])
            )
            self.assertEqual(status, 200, body)
        status, _, _ = test_connect.connect(
            "/vault.v1.Tokenizer/Tokenize", test_connect.tokenize_body(["4111111111111111"]),
            key=None,
        )
        self.assertEqual(status, 401)
        after, text = scrape()
        self.assertEqual(calls(after, **ok) - calls(before, **ok), 3)
        self.assertEqual(calls(after, **denied) - calls(before, **denied), 1)
        self.assertEqual(
            [s.value for s in after["vault_sealed"].samples], [0.0])
        self.assertEqual(
            [s.value for s in after["vault_ready"].samples], [1.0])
        fsyncs = [s.value for s in after["vault_audit_fsync_duration_seconds"].samples
                  if s.name.endswith("_count")]
        self.assertGreater(fsyncs[0], 0)

    def test_labels_are_bounded(self):
        # A value in the template field is recorded as (unknown), never as itself.
        test_connect.connect(
            "/vault.v1.Tokenizer/Tokenize",
            test_connect.tokenize_body(["x"], template=test_connect.CANARY),
        )
        families, text = scrape()
        self.assertNotIn(test_connect.CANARY, text)
        self.assertNotIn("4111111111111111", text)
        templates = {s.labels.get("template") for s in families["vault_calls"].samples}
        self.assertIn("(unknown)", templates)
        # Configured names only (the built-in set has no digits), or (unknown), or none.
        for t in templates:
            self.assertTrue(t in ("", "(unknown)") or t.replace("_", "").isalpha(), t)
        protocols = {s.labels.get("protocol") for s in families["vault_calls"].samples}
        self.assertLessEqual(protocols, {"grpc", "grpc_web", "connect"})

    def test_zz_sealed_is_not_ready(self):
        # Last of the whole run (unittest orders by name, and this case comes last): the dev
        # daemon cannot be unsealed again by rpc, so it stops sealed.
        status, _, body = test_connect.connect("/vault.v1.Admin/Seal", {})
        self.assertEqual(status, 200, body)
        self.assertEqual(get("/readyz")[0], 503)
        self.assertEqual(get("/livez")[0], 200)
        families, _ = scrape()
        self.assertEqual([s.value for s in families["vault_sealed"].samples], [1.0])
        self.assertEqual([s.value for s in families["vault_ready"].samples], [0.0])


CASES = (Metrics,)
