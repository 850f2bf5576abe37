#!/usr/bin/env python3
"""Writes corpus.jsonl: the hostile-request corpus run by tests/tests/daemon/hostile.rs.

The JSONL file is the data of record (reviewed in diffs); this script only saves typing and
is kept so the corpus can be regenerated after an edit. Run: python3 generate.py > corpus.jsonl

A case: {"id", "rpc": Tokenize|Detokenize|Reveal|Delete|Raw, "cred", "template",
 "values" | "tokens" (strings, or {"repeat": s, "n": k}), "batch": n (repeat the one item n
 times), "metadata", "purpose", "request_id", "idempotency_key", "key_version", "mask",
 "headers", "raw": {"method", "hex"}, "expect": call-level code, "items": per-item code
 (every item) when the call is OK, "expect_connect": the call-level code over the Connect
 protocol where it differs from gRPC's and gRPC-Web's}.
Two such differences, both where tonic's codec answers before any handler (the contract
documents them) while the Connect adapter reads the body itself and answers as connect-go (the
reference implementation) does: an undecodable protobuf body is INTERNAL over gRPC and
INVALID_ARGUMENT over Connect; a message over `limits.max_message_bytes` is OUT_OF_RANGE over
gRPC and RESOURCE_EXHAUSTED over Connect.
Token placeholders: "$token:<t>" (a token the harness issued for template t), "$forged:<t>"
(that token with one character changed), "$cut:<t>" (its first half).
Credentials: a certificate name of the test PKI (all, payments, checkout, support, helpdesk,
two-spiffe, other-ca), "none", or "key:<variant>" (expired, revoked, bogus, empty, basic,
lowercase-garbage, both).
"""
import json, sys

cases = []
def case(id, **kw):
    kw["id"] = id
    cases.append(kw)

def rep(s, n):
    return {"repeat": s, "n": n}

# ---- invalid card numbers, on every PAN template (FPE, opaque, formatted, deterministic)
pans_bad = {
    "luhn-1": "4111111111111112", "luhn-2": "5555555555554445", "luhn-3": "378282246310006",
    "luhn-4": "6011111111111118", "luhn-spaces": "4111 1111 1111 1112",
    "short-12": "411111111111", "long-20": "41111111111111111113", "long-25": "4111111111111111111111111",
    "letters": "4111a11111111111", "all-letters": "abcdefghijklmnop", "hex": "0x4111111111111111",
    "arabic-digits": "\u0664\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661",
    "fullwidth": "\uff14\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11\uff11",
    "empty": "", "blank": "   ", "nul": "4111111111\u00001111", "tab": "4111\t1111\t1111\t1111",
    "negative": "-4111111111111111", "huge": rep("4", 600),
}
for t in ["pan", "pan_vault", "pan_vault_fmt", "pan_vault_det"]:
    for k, v in pans_bad.items():
        case(f"tokenize-{t}-{k}", rpc="Tokenize", cred="all", template=t, values=[v],
             expect="OK", items="INVALID_ARGUMENT")

# ---- SSNs, digits, alphanumeric, e-mail: wrong alphabets, lengths, FF1 minimum domain
bad_by_kind = {
    "ssn": {"short": "123-45-678", "long": "123-45-67890", "letters": "12a-45-6789",
            "empty": "", "words": "not an ssn", "dots-only": "...-..-...."},
    "digits": {"letters": "12345abc", "empty": "", "under-domain-5": "12345",
               "under-domain-sep": "1-2-3-4-5", "unicode": "\u0661\u0662\u0663\u0664\u0665\u0666\u0667",
               "huge": rep("7", 600)},
    "alphanumeric": {"dash": "abc-def-123", "space": "abc def 123", "accent": "h\u00e9llo12345",
                     "emoji": "abc\U0001F600def", "under-domain-3": "abc", "empty": "",
                     "huge": rep("z", 600)},
    "email": {"no-at": "no-at-sign.example.com", "no-local": "@example.com", "no-domain": "someone@",
              "two-at": "a@@example.com", "space": "some one@example.com", "empty": "",
              "huge-local": rep("x", 600) },
}
for kind, vals in bad_by_kind.items():
    for t in [kind, f"{kind}_vault"]:
        for k, v in vals.items():
            # Vaulted templates store any value of the right format: no FF1 domain rule.
            if t.endswith("_vault") and k.startswith("under-domain"):
                continue
            case(f"tokenize-{t}-{k}", rpc="Tokenize", cred="all", template=t, values=[v],
                 expect="OK", items="INVALID_ARGUMENT")

# ---- unknown templates, for each rpc (a PAN in the template field must not be echoed)
unknown = {"nope": "nope", "upper": "PAN", "trailing-space": "pan ", "empty": "",
           "path": "../../etc/passwd", "pan-as-template": "4111111111111111",
           "long": rep("t", 1000), "unicode": "p\u00e4n", "nul": "pan\u0000"}
for k, name in unknown.items():
    case(f"tokenize-unknown-{k}", rpc="Tokenize", cred="all", template=name,
         values=["4111111111111111"], expect="NOT_FOUND" if k != "empty" else "NOT_FOUND")
    case(f"detokenize-unknown-{k}", rpc="Detokenize", cred="all", template=name,
         tokens=["$token:pan_vault"], purpose="test", expect="NOT_FOUND")
    case(f"reveal-unknown-{k}", rpc="Reveal", cred="all", template=name,
         tokens=["$token:pan_vault"], purpose="test", expect="NOT_FOUND")
    case(f"delete-unknown-{k}", rpc="Delete", cred="all", template=name,
         tokens=["$token:pan_vault"], expect="NOT_FOUND")

# ---- malformed and forged tokens
opaque_bad = {
    "empty": ("", "INVALID_ARGUMENT"), "prefix-only": ("tok_", "INVALID_ARGUMENT"),
    "upper": ("tok_" + "A" * 26, "INVALID_ARGUMENT"), "short": ("tok_" + "a" * 25, "INVALID_ARGUMENT"),
    "long": ("tok_" + "a" * 27, "INVALID_ARGUMENT"), "bad-char": ("tok_" + "a" * 25 + "1", "INVALID_ARGUMENT"),
    "no-prefix": ("a" * 30, "INVALID_ARGUMENT"), "pan": ("4111111111111111", "INVALID_ARGUMENT"),
    "huge": (rep("tok_", 200), "INVALID_ARGUMENT"), "unicode": ("tok_" + "\u00e4" * 13, "INVALID_ARGUMENT"),
    # Well-shaped but never issued: unknown.
    "well-shaped": ("tok_" + "a" * 26, "NOT_FOUND"), "well-shaped-2": ("tok_" + "abcdefghijklmnopqrstuvwxya", "NOT_FOUND"),
    "forged": ("$forged:pan_vault", "NOT_FOUND"), "cut": ("$cut:pan_vault", "INVALID_ARGUMENT"),
    "other-template": ("$token:ssn_vault", "NOT_FOUND"), "det-template": ("$token:pan_vault_det", "NOT_FOUND"),
}
for k, (tok, code) in opaque_bad.items():
    case(f"detokenize-pan_vault-{k}", rpc="Detokenize", cred="payments", template="pan_vault",
         tokens=[tok], purpose="test", expect="OK", items=code)
    case(f"reveal-pan_vault-{k}", rpc="Reveal", cred="support", template="pan_vault",
         tokens=[tok], purpose="test", expect="OK", items=code)
    case(f"delete-pan_vault-{k}", rpc="Delete", cred="all", template="pan_vault",
         tokens=[tok], expect="OK", items=code)
fmt_bad = {
    "opaque-shape": ("tok_" + "a" * 26, "INVALID_ARGUMENT"), "forged": ("$forged:pan_vault_fmt", "NOT_FOUND"),
    "random-pan-shape": ("4111110000001234", "NOT_FOUND"), "huge": (rep("4", 600), "INVALID_ARGUMENT"),
    "empty": ("", "NOT_FOUND"),
}
for k, (tok, code) in fmt_bad.items():
    case(f"detokenize-pan_vault_fmt-{k}", rpc="Detokenize", cred="all", template="pan_vault_fmt",
         tokens=[tok], purpose="test", expect="OK", items=code)
fpe_bad = {
    "pan": [("luhn-valid", "4111111111111111"), ("letters", "4111a11111111111"), ("short", "41111"),
            ("empty", ""), ("huge", rep("4", 600)), ("opaque", "tok_" + "a" * 26)],
    "ssn": [("letters", "abc-de-fghi"), ("short", "123-45"), ("empty", "")],
    "email": [("no-at", "nobody"), ("empty", ""), ("huge", rep("e", 600))],
    "alphanumeric": [("dash", "ab-cd-ef"), ("empty", "")],
    "digits": [("letters", "12ab34cd"), ("under-domain", "1234")],
}
for t, items in fpe_bad.items():
    for k, tok in items:
        case(f"detokenize-{t}-{k}", rpc="Detokenize", cred="all", template=t,
             tokens=[tok], purpose="test", expect="OK", items="INVALID_ARGUMENT")

# ---- oversized and malformed requests
case("tokenize-batch-1001", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], batch=1001, expect="INVALID_ARGUMENT")
case("tokenize-batch-0", rpc="Tokenize", cred="all", template="pan_vault", values=[], expect="INVALID_ARGUMENT")
case("detokenize-batch-1001", rpc="Detokenize", cred="all", template="pan_vault", tokens=["$token:pan_vault"], batch=1001, purpose="test", expect="INVALID_ARGUMENT")
case("detokenize-batch-0", rpc="Detokenize", cred="all", template="pan_vault", tokens=[], purpose="test", expect="INVALID_ARGUMENT")
case("reveal-batch-1001", rpc="Reveal", cred="all", template="pan_vault", tokens=["$token:pan_vault"], batch=1001, purpose="test", expect="INVALID_ARGUMENT")
case("delete-batch-1001", rpc="Delete", cred="all", template="pan_vault", tokens=["$token:pan_vault"], batch=1001, expect="INVALID_ARGUMENT")
case("tokenize-message-5mib", rpc="Tokenize", cred="all", template="pan_vault", values=[rep("4", 5 * 1024 * 1024)], expect="OUT_OF_RANGE",
     expect_connect="RESOURCE_EXHAUSTED")
case("tokenize-metadata-huge-value", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], metadata={"note": rep("m", 5000)}, expect="OK", items="INVALID_ARGUMENT")
case("tokenize-metadata-many-keys", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], metadata={"k%03d" % i: "v" * 40 for i in range(200)}, expect="OK", items="INVALID_ARGUMENT")
case("tokenize-metadata-on-fpe", rpc="Tokenize", cred="all", template="pan", values=["4111111111111111"], metadata={"owner": "alice"}, expect="OK", items="INVALID_ARGUMENT")
case("tokenize-idempotency-key-129", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], idempotency_key=rep("i", 129), expect="INVALID_ARGUMENT")
case("tokenize-request-id-129", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], request_id=rep("r", 129), expect="INVALID_ARGUMENT")
case("tokenize-request-id-control", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], request_id="req\n1", expect="INVALID_ARGUMENT")
case("tokenize-request-id-unicode", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], request_id="r\u00e9q", expect="INVALID_ARGUMENT")
case("tokenize-key-version-wrong", rpc="Tokenize", cred="all", template="pan", values=["4111111111111111"], key_version=99, expect="FAILED_PRECONDITION")
case("detokenize-key-version-unknown", rpc="Detokenize", cred="all", template="ssn", tokens=["123-45-6789"], key_version=99, purpose="test", expect="OK", items="FAILED_PRECONDITION")
case("reveal-unknown-mask", rpc="Reveal", cred="support", template="pan_vault", tokens=["$token:pan_vault"], purpose="test", mask="full", expect="INVALID_ARGUMENT")
case("reveal-huge-mask", rpc="Reveal", cred="support", template="pan_vault", tokens=["$token:pan_vault"], purpose="test", mask=rep("m", 10000), expect="INVALID_ARGUMENT")
case("tokenize-header-64kib", rpc="Tokenize", cred="all", template="pan_vault", values=["4111111111111111"], headers={"x-padding": rep("h", 64 * 1024)}, expect="TRANSPORT")

# ---- purposes
purposes = {"empty": "", "blank": "   ", "tab-newline": "\t\n", "257": rep("p", 257), "huge": rep("p", 100000)}
for k, p in purposes.items():
    for rpc, cred in [("Detokenize", "payments"), ("Reveal", "support")]:
        case(f"{rpc.lower()}-purpose-{k}", rpc=rpc, cred=cred, template="pan_vault", tokens=["$token:pan_vault"], purpose=p,
             expect="INVALID_ARGUMENT" if k != "huge" else "INVALID_ARGUMENT")

# ---- credentials
creds = {"none": "UNAUTHENTICATED", "key:bogus": "UNAUTHENTICATED", "key:empty": "UNAUTHENTICATED",
         "key:basic": "UNAUTHENTICATED", "key:expired": "UNAUTHENTICATED", "key:revoked": "UNAUTHENTICATED",
         "key:both": "UNAUTHENTICATED", "key:huge": "UNAUTHENTICATED", "two-spiffe": "UNAUTHENTICATED",
         "other-ca": "HANDSHAKE"}
for c, code in creds.items():
    case(f"tokenize-cred-{c}", rpc="Tokenize", cred=c, template="pan", values=["4111111111111111"], expect=code)
    case(f"detokenize-cred-{c}", rpc="Detokenize", cred=c, template="pan_vault", tokens=["$token:pan_vault"], purpose="test", expect=code)
    case(f"reveal-cred-{c}", rpc="Reveal", cred=c, template="pan_vault", tokens=["$token:pan_vault"], purpose="test", expect=code)
# Authenticated, not authorized; anonymous callers learn nothing about validity.
case("detokenize-checkout-denied", rpc="Detokenize", cred="checkout", template="pan_vault", tokens=["$token:pan_vault"], purpose="test", expect="PERMISSION_DENIED")
case("tokenize-support-denied", rpc="Tokenize", cred="support", template="pan", values=["4111111111111111"], expect="PERMISSION_DENIED")
case("detokenize-none-bad-everything", rpc="Detokenize", cred="none", template="nope", tokens=[], purpose="", expect="UNAUTHENTICATED")
# End-user tokens for the helpdesk role.
for k, hdr in {"missing": None, "garbage": "garbage", "alg-none": "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9.",
               "hs256": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
               "huge": rep("a", 8000)}.items():
    headers = {} if hdr is None else {"x-end-user-token": hdr}
    case(f"reveal-end-user-{k}", rpc="Reveal", cred="helpdesk", template="pan_vault", tokens=["$token:pan_vault"], purpose="test", headers=headers, expect="PERMISSION_DENIED")

# ---- invalid UTF-8 and malformed protobuf, hand-built
def varint(n):
    out = b""
    while True:
        b = n & 0x7f; n >>= 7
        if n: out += bytes([b | 0x80])
        else: return out + bytes([b])
def field(num, data):
    return varint(num << 3 | 2) + varint(len(data)) + data
BAD = b"\xff\xfe4111111111111111\xc3("
T = "/vault.v1.Tokenizer/"
raw = {
    "tokenize-value-not-utf8": (T + "Tokenize", field(2, b"pan") + field(4, field(1, BAD)), "INTERNAL"),
    "tokenize-template-not-utf8": (T + "Tokenize", field(2, b"p\xe4n") + field(4, field(1, b"4111111111111111")), "INTERNAL"),
    "tokenize-idempotency-not-utf8": (T + "Tokenize", field(2, b"pan_vault") + field(4, field(1, b"4111111111111111") + field(2, BAD)), "INTERNAL"),
    "tokenize-metadata-key-not-utf8": (T + "Tokenize", field(2, b"pan_vault") + field(4, field(1, b"4111111111111111") + field(3, field(1, BAD) + field(2, b"v"))), "INTERNAL"),
    "tokenize-request-id-not-utf8": (T + "Tokenize", field(1, BAD) + field(2, b"pan") + field(4, field(1, b"4111111111111111")), "INTERNAL"),
    "detokenize-token-not-utf8": (T + "Detokenize", field(2, b"pan_vault") + field(4, b"test") + field(5, field(1, BAD)), "INTERNAL"),
    "detokenize-purpose-not-utf8": (T + "Detokenize", field(2, b"pan_vault") + field(4, BAD) + field(5, field(1, b"tok_aaaaaaaaaaaaaaaaaaaaaaaaaa")), "INTERNAL"),
    "reveal-mask-not-utf8": (T + "Reveal", field(2, b"pan_vault") + field(4, b"test") + field(5, BAD) + field(6, field(1, b"tok_aaaaaaaaaaaaaaaaaaaaaaaaaa")), "INTERNAL"),
    "delete-token-not-utf8": (T + "DeleteTokens", field(2, b"pan_vault") + field(3, field(1, BAD)), "INTERNAL"),
    "admin-caller-name-not-utf8": ("/vault.v1.Admin/CreateCaller", field(1, BAD), "INTERNAL"),
    "tokenize-truncated": (T + "Tokenize", field(2, b"pan")[:-1], "INTERNAL"),
    "tokenize-length-past-end": (T + "Tokenize", varint(2 << 3 | 2) + varint(1000) + b"pan", "INTERNAL"),
    "tokenize-varint-overflow": (T + "Tokenize", b"\x18" + b"\xff" * 11, "INTERNAL"),
    "tokenize-wrong-wire-type": (T + "Tokenize", varint(2 << 3 | 0) + varint(5), "INTERNAL"),
    "tokenize-group-wire-type": (T + "Tokenize", varint(2 << 3 | 3), "INTERNAL"),
    "tokenize-empty-message": (T + "Tokenize", b"", "INVALID_ARGUMENT"),
    "tokenize-unknown-field-ignored": (T + "Tokenize", field(99, BAD) + field(2, b"pan") + field(4, field(1, b"4111111111111111")), "OK"),
    "unknown-method": (T + "Exfiltrate", b"", "UNIMPLEMENTED"),
}
for k, (method, body, code) in raw.items():
    extra = {"expect_connect": "INVALID_ARGUMENT"} if code == "INTERNAL" else {}
    case(f"raw-{k}", rpc="Raw", cred="all", raw={"method": method, "hex": body.hex()}, expect=code,
         **extra)

for c in cases:
    print(json.dumps(c, ensure_ascii=False, sort_keys=True))
print(f"{len(cases)} cases", file=sys.stderr)
