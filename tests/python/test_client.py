"""A Python service using vault.v1 as documented in proto/python/README.md.

Generates the stubs with proto/python/generate.sh into a temporary directory, then calls a
running `vaultd serve --dev` over plaintext loopback with the dev API key:

    VAULT_ADDR=127.0.0.1:50051 VAULT_API_KEY_FILE=vault-data/dev-api-key \
        python3 tests/python/test_client.py

(tests/python/run.sh does all of it: venv, daemon, test.) Plain unittest; the last line is
`python: N passed, M failed` for CI's summary.
"""

import os
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# A well-known test card number (Visa test range); never a real one.
PAN = "4111111111111111"


def generate_stubs():
    """Run proto/python/generate.sh into a temp dir and put it on sys.path."""
    out = tempfile.mkdtemp(prefix="vault-py-stubs-")
    # generate.sh runs `python3 -m grpc_tools.protoc`: make that this interpreter (a venv's).
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    subprocess.run(
        ["bash", os.path.join(REPO, "proto", "python", "generate.sh"), out],
        check=True,
        stdout=subprocess.DEVNULL,
        env=env,
    )
    sys.path.insert(0, out)
    return out


generate_stubs()

from vault.v1 import admin_pb2, admin_pb2_grpc, common_pb2  # noqa: E402
from vault.v1 import tokenizer_pb2, tokenizer_pb2_grpc  # noqa: E402

import test_connect  # noqa: E402  (Connect, gRPC-Web and hostile HTTP, on the same stubs)
import test_metrics  # noqa: E402  (/metrics through the Prometheus parser)


def _api_key():
    path = os.environ.get("VAULT_API_KEY_FILE")
    if path:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    return os.environ["VAULT_API_KEY"]


ADDR = os.environ.get("VAULT_ADDR", "127.0.0.1:50051")
KEY = _api_key()


def auth(key=None):
    return [("authorization", "Bearer " + (KEY if key is None else key))]


class Connected(unittest.TestCase):
    """A channel to the daemon and its two stubs, shared by a test case's tests."""

    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(ADDR)
        grpc.channel_ready_future(cls.channel).result(timeout=10)
        cls.tokenizer = tokenizer_pb2_grpc.TokenizerStub(cls.channel)
        cls.admin = admin_pb2_grpc.AdminStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()


class Client(Connected):

    def tokenize(self, template, values):
        resp = self.tokenizer.Tokenize(
            tokenizer_pb2.TokenizeRequest(
                template=template,
                items=[tokenizer_pb2.TokenizeItem(value=v) for v in values],
            ),
            metadata=auth(),
            timeout=10,
        )
        self.assertTrue(resp.request_id)
        tokens = []
        for r in resp.results:
            self.assertEqual(r.WhichOneof("outcome"), "token", r)
            self.assertGreaterEqual(r.token.key_version, 1)
            tokens.append(r.token.token)
        return tokens

    def detokenize(self, template, tokens):
        resp = self.tokenizer.Detokenize(
            tokenizer_pb2.DetokenizeRequest(
                template=template,
                purpose="python client test",
                items=[tokenizer_pb2.DetokenizeItem(token=t) for t in tokens],
            ),
            metadata=auth(),
            timeout=10,
        )
        values = []
        for r in resp.results:
            self.assertEqual(r.WhichOneof("outcome"), "value", r)
            values.append(r.value.value)
        return values

    def test_fpe_pan_round_trip(self):
        """`pan` (FF1): the token is a card number of the same length, and comes back."""
        [token] = self.tokenize("pan", [PAN])
        self.assertEqual(len(token), len(PAN))
        self.assertTrue(token.isdigit())
        self.assertNotEqual(token, PAN)
        self.assertEqual(self.detokenize("pan", [token]), [PAN])
        # A batch: several items in one call, results in order.
        values = [PAN, "5555555555554444", "378282246310005"]
        tokens = self.tokenize("pan", values)
        self.assertEqual(self.detokenize("pan", tokens), values)

    def test_vaulted_round_trip_and_reveal(self):
        """`pan_vault` (stored, opaque token): round trip, and reveal shows the last four only."""
        [token] = self.tokenize("pan_vault", [PAN])
        self.assertTrue(token.startswith("tok_"), token)
        self.assertNotIn(PAN, token)
        self.assertEqual(self.detokenize("pan_vault", [token]), [PAN])
        resp = self.tokenizer.Reveal(
            tokenizer_pb2.RevealRequest(
                template="pan_vault",
                purpose="python client test",
                items=[tokenizer_pb2.RevealItem(token=token)],
            ),
            metadata=auth(),
            timeout=10,
        )
        [r] = resp.results
        self.assertEqual(r.WhichOneof("outcome"), "value", r)
        masked = r.value.masked_value
        self.assertTrue(masked.endswith(PAN[-4:]), masked)
        digits = [c for c in masked if c.isdigit()]
        self.assertEqual("".join(digits), PAN[-4:], masked)
        # An unknown token is an item error, not a call failure.
        resp = self.tokenizer.Detokenize(
            tokenizer_pb2.DetokenizeRequest(
                template="pan_vault",
                purpose="python client test",
                items=[tokenizer_pb2.DetokenizeItem(token="tok_notatoken")],
            ),
            metadata=auth(),
            timeout=10,
        )
        [r] = resp.results
        self.assertEqual(r.WhichOneof("outcome"), "error", r)

    def test_bad_key_is_unauthenticated(self):
        """A wrong or missing API key: UNAUTHENTICATED, on Tokenizer and Admin alike."""
        request = tokenizer_pb2.TokenizeRequest(
            template="pan", items=[tokenizer_pb2.TokenizeItem(value=PAN)]
        )
        for metadata in (auth("vk_not-a-real-key"), None):
            with self.assertRaises(grpc.RpcError) as caught:
                self.tokenizer.Tokenize(request, metadata=metadata, timeout=10)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            self.assertNotIn(PAN, caught.exception.details() or "")
        with self.assertRaises(grpc.RpcError) as caught:
            self.admin.GetSealStatus(
                admin_pb2.GetSealStatusRequest(), metadata=auth("wrong"), timeout=10
            )
        self.assertEqual(caught.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        # The right key works on Admin too.
        status = self.admin.GetSealStatus(
            admin_pb2.GetSealStatusRequest(), metadata=auth(), timeout=10
        )
        self.assertFalse(status.sealed)


class Contract(Connected):
    """Promises of the .proto comments, checked with a client nobody on the project wrote. Each
    test names the comment it checks (tests/tests/daemon/contract.rs checks the same in Rust)."""

    def tokenize_items(self, template, items, request_id=None, timeout=10):
        return self.tokenizer.Tokenize(
            tokenizer_pb2.TokenizeRequest(
                template=template, items=items, request_id=request_id
            ),
            metadata=auth(),
            timeout=timeout,
        )

    def test_idempotency_key(self):
        """tokenizer.proto TokenizeItem.idempotency_key: "the same key and value returns the first
        token (with existing = true) ...; the same key with a different value fails the item with
        ALREADY_EXISTS"."""
        key = "py-order-%d" % time.time_ns()
        item = lambda v: tokenizer_pb2.TokenizeItem(value=v, idempotency_key=key)
        [first] = self.tokenize_items("pan_vault", [item(PAN)]).results
        self.assertEqual(first.WhichOneof("outcome"), "token", first)
        self.assertFalse(first.token.existing)
        [again] = self.tokenize_items("pan_vault", [item(PAN)]).results
        self.assertEqual(again.token.token, first.token.token)
        self.assertTrue(again.token.existing)
        [other] = self.tokenize_items("pan_vault", [item("5555555555554444")]).results
        self.assertEqual(other.WhichOneof("outcome"), "error", other)
        self.assertEqual(other.error.code, common_pb2.ERROR_CODE_ALREADY_EXISTS)
        self.assertNotIn("5555555555554444", other.error.message)
        self.assertNotIn(PAN, other.error.message)
        # The same key on another template is another key.
        [ssn] = self.tokenize_items(
            "ssn_vault",
            [tokenizer_pb2.TokenizeItem(value="123-45-6789", idempotency_key=key)],
        ).results
        self.assertEqual(ssn.WhichOneof("outcome"), "token", ssn)
        self.assertFalse(ssn.token.existing)

    def test_expires_at(self):
        """tokenizer.proto Token.expires_at and DetokenizedValue.expires_at: "When the token
        expires. Unset when it does not"."""
        now = int(time.time())
        resp = self.tokenize_items(
            "pan_vault",
            [
                tokenizer_pb2.TokenizeItem(value=PAN, ttl_seconds=3600),
                tokenizer_pb2.TokenizeItem(value=PAN),
            ],
        )
        with_ttl, without = resp.results
        self.assertTrue(with_ttl.token.HasField("expires_at"))
        self.assertLessEqual(abs(with_ttl.token.expires_at.seconds - (now + 3600)), 5)
        self.assertFalse(without.token.HasField("expires_at"))
        resp = self.tokenizer.Detokenize(
            tokenizer_pb2.DetokenizeRequest(
                template="pan_vault",
                purpose="python contract test",
                items=[
                    tokenizer_pb2.DetokenizeItem(token=with_ttl.token.token),
                    tokenizer_pb2.DetokenizeItem(token=without.token.token),
                ],
            ),
            metadata=auth(),
            timeout=10,
        )
        a, b = resp.results
        self.assertEqual(a.value.expires_at, with_ttl.token.expires_at)
        self.assertFalse(b.value.HasField("expires_at"))

    def test_sub_millisecond_deadlines(self):
        """Request path: a deadline that has passed, or passes before the work starts, answers
        DEADLINE_EXCEEDED without doing the work, and the audit never says OK for it."""
        ids = []
        for i in range(20):
            request_id = "py-sub-ms-%d-%d" % (time.time_ns(), i)
            ids.append(request_id)
            with self.assertRaises(grpc.RpcError) as caught:
                self.tokenize_items(
                    "pan_vault",
                    [tokenizer_pb2.TokenizeItem(value=PAN)],
                    request_id=request_id,
                    timeout=0.000001 + i * 0.000045,
                )
            self.assertEqual(
                caught.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED, request_id
            )
        time.sleep(0.5)
        for request_id in ids:
            events = self.admin.QueryAuditEvents(
                admin_pb2.QueryAuditEventsRequest(request_id=request_id),
                metadata=auth(),
                timeout=10,
            ).events
            for e in events:
                self.assertNotEqual(e.status_code, 0, (request_id, e))
                self.assertIn(
                    e.status_code,
                    (grpc.StatusCode.DEADLINE_EXCEEDED.value[0], grpc.StatusCode.CANCELLED.value[0], 2),
                    (request_id, e),
                )

    def test_raise_min_decryption_version_equal_fails(self):
        """admin.proto RaiseMinDecryptionVersion: "lower or equal fails with
        FAILED_PRECONDITION"."""
        self.admin.RotateKey(
            admin_pb2.RotateKeyRequest(key_name="data/digits_vault"), metadata=auth(), timeout=10
        )
        keys = self.admin.GetKeyStatus(
            admin_pb2.GetKeyStatusRequest(), metadata=auth(), timeout=10
        ).keys
        [k] = [k for k in keys if k.name == "data/digits_vault"]
        for v in (k.min_decryption_version, k.active_version + 1):
            with self.assertRaises(grpc.RpcError) as caught:
                self.admin.RaiseMinDecryptionVersion(
                    admin_pb2.RaiseMinDecryptionVersionRequest(
                        key_name="data/digits_vault", min_decryption_version=v
                    ),
                    metadata=auth(),
                    timeout=10,
                )
            self.assertEqual(caught.exception.code(), grpc.StatusCode.FAILED_PRECONDITION, v)

    def test_reflection_v1alpha_and_v1(self):
        """README: reflection is on in dev mode. grpcio's own reflection client speaks v1alpha
        (it got UNIMPLEMENTED); grpcurl and current tools speak v1. Both list the services."""
        from google.protobuf import descriptor_pool
        from grpc_reflection.v1alpha import reflection_pb2
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        db = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(db.get_services())
        self.assertIn("vault.v1.Tokenizer", services)
        self.assertIn("vault.v1.Admin", services)
        # The tokenizer's file resolves through reflection too.
        pool = descriptor_pool.DescriptorPool(db)
        tokenizer = pool.FindServiceByName("vault.v1.Tokenizer")
        self.assertIn("Tokenize", tokenizer.methods_by_name)
        # v1: the same messages on the wire, under the v1 service name.
        call = self.channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        [resp] = list(
            call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
        )
        names = {s.name for s in resp.list_services_response.service}
        self.assertIn("vault.v1.Tokenizer", names)
        self.assertIn("grpc.reflection.v1.ServerReflection", names)


def main():
    suite = unittest.TestSuite()
    for case in (Client, Contract) + test_connect.CASES + test_metrics.CASES:
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"python: {passed} passed, {failed} failed")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
