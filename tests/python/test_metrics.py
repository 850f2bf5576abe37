"""vaultd's metrics listener read by a real Prometheus text parser (the Prometheus project's
Python client, OpenMetrics): the families are there, counters move as calls are made, labels
carry only fixed names and configured templates, and the probes answer.

Loaded by test_client.py; VAULT_METRICS_ADDR is where run.sh told vaultd to listen.
"""

import http.client
import os
import random
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


def fresh_pan():
    """A random 16-digit number with a valid Luhn check digit (a new record each time)."""
    digits = [4] + [random.randrange(10) for _ in range(14)]
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return "".join(map(str, digits)) + str((10 - total % 10) % 10)


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
            "vault_store_commit_duration_seconds", "vault_store_read_duration_seconds",
        ]:
            self.assertIn(name, before, sorted(before)[:40])
        ok = dict(rpc="tokenize", template="pan_vault", protocol="connect", code="OK")
        denied = dict(rpc="tokenize", template="pan_vault", protocol="connect",
                      code="UNAUTHENTICATED")
        for _ in range(3):
            status, _, body = test_connect.connect(
                "/vault.v1.Tokenizer/Tokenize", test_connect.tokenize_body([fresh_pan()])
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
        # Three vaulted tokenizes: three (or, grouped, fewer but at least one) record commits.
        def inserts(families):
            return sum(s.value for s in families["vault_store_commit_duration_seconds"].samples
                       if s.name.endswith("_count") and s.labels.get("op") == "insert_records")
        self.assertGreater(inserts(after) - inserts(before), 0)
        ops = {s.labels.get("op")
               for s in after["vault_store_commit_duration_seconds"].samples}
        self.assertTrue(all(op.replace("_", "").isalpha() for op in ops), ops)

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
