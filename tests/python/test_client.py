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

from vault.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from vault.v1 import tokenizer_pb2, tokenizer_pb2_grpc  # noqa: E402


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


class Client(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.channel = grpc.insecure_channel(ADDR)
        grpc.channel_ready_future(cls.channel).result(timeout=10)
        cls.tokenizer = tokenizer_pb2_grpc.TokenizerStub(cls.channel)
        cls.admin = admin_pb2_grpc.AdminStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()

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


def main():
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(Client)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors)
    passed = result.testsRun - failed - len(result.skipped)
    print(f"python: {passed} passed, {failed} failed")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
